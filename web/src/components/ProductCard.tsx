import { Link } from "react-router";
import type { ProductSummary } from "../api/types";
import { formatMoney } from "./ui";

export function ProductCard({ product }: { product: ProductSummary }) {
  return (
    <li className="card">
      <Link to={`/products/${product.productId}`} className="card-link">
        {product.imageUrl ? (
          <img src={product.imageUrl} alt="" width={200} height={200} loading="lazy" />
        ) : (
          <div className="no-image" aria-hidden="true" />
        )}
        <span className="card-name">{product.name}</span>
      </Link>
      <span className="price">{formatMoney(product.price, product.currency)}</span>
      <span className={product.stock > 0 ? "stock in" : "stock out"}>
        {product.stock > 0 ? "In stock" : "Out of stock"}
      </span>
    </li>
  );
}

export function ProductGrid({ products }: { products: ProductSummary[] }) {
  return (
    <ul className="grid" aria-label="Products">
      {products.map((product) => (
        <ProductCard key={product.productId} product={product} />
      ))}
    </ul>
  );
}
