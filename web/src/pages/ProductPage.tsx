import { useEffect, useState, type FormEvent } from "react";
import { Link, useParams } from "react-router";
import { catalog } from "../api/client";
import type { ProductDetail } from "../api/types";
import { Loading, Notice, PageTitle, ProblemMessage, formatMoney } from "../components/ui";
import { useAsync } from "../components/useAsync";
import { useCart } from "../state";
import { flattenCategories } from "./listing";
import { findVariant, initialChoice } from "./variants";

export function ProductPage() {
  const { productId = "" } = useParams();
  const product = useAsync(() => catalog.product(productId), [productId]);
  return (
    <div className="product-page">
      {product.loading && <Loading label="Loading product" />}
      <ProblemMessage error={product.error} />
      {product.data && <ProductView product={product.data} />}
    </div>
  );
}

function ProductView({ product }: { product: ProductDetail }) {
  const [chosen, setChosen] = useState(() => initialChoice(product));
  const [quantity, setQuantity] = useState(1);
  const [added, setAdded] = useState(false);
  const cart = useCart();
  const categories = useAsync(() => catalog.categories(), []);
  const categoryName =
    flattenCategories(categories.data ?? []).find((c) => c.slug === product.category)?.label ??
    product.category;
  const variant = findVariant(product, chosen);
  const price = variant?.price ?? product.price;
  const stock = variant ? variant.stock : product.stock;

  useEffect(() => setAdded(false), [chosen, quantity]);

  const add = (event: FormEvent) => {
    event.preventDefault();
    cart.add({
      productId: product.productId,
      variantId: variant?.variantId ?? null,
      name: product.name,
      variantTitle: product.options.length > 0 ? (variant?.title ?? null) : null,
      unitPrice: price,
      currency: product.currency,
      imageUrl: product.images[0]?.urls.thumb ?? product.imageUrl,
      quantity,
      stock,
    });
    setAdded(true);
  };

  return (
    <>
      <nav aria-label="Breadcrumb" className="breadcrumb">
        <Link to="/products">Shop</Link>
        {product.category && (
          <>
            {" / "}
            <Link to={`/products?category=${encodeURIComponent(product.category)}`}>
              {categoryName}
            </Link>
          </>
        )}
      </nav>
      <div className="product-layout">
        <Gallery product={product} />
        <div className="product-info">
          <PageTitle>{product.name}</PageTitle>
          <p className="price large">{formatMoney(price, product.currency)}</p>
          <form onSubmit={add} className="buy">
            {product.options.map((option) => (
              <div className="field" key={option.name}>
                <label htmlFor={`option-${option.name}`}>{option.name}</label>
                <select
                  id={`option-${option.name}`}
                  value={chosen[option.name] ?? ""}
                  onChange={(e) => setChosen({ ...chosen, [option.name]: e.target.value })}
                >
                  {option.values.map((value) => (
                    <option key={value} value={value}>
                      {value}
                    </option>
                  ))}
                </select>
              </div>
            ))}
            <p className={stock > 0 ? "stock in" : "stock out"} aria-live="polite">
              {!variant && product.variants.length > 0
                ? "This combination is not available"
                : stock > 0
                  ? stock <= 5
                    ? `Only ${stock} left in stock`
                    : `In stock (${stock})`
                  : "Out of stock"}
            </p>
            <div className="field small-field">
              <label htmlFor="quantity">Quantity</label>
              <input
                id="quantity"
                type="number"
                min={1}
                max={Math.max(1, stock)}
                value={quantity}
                onChange={(e) => setQuantity(Math.max(1, Number(e.target.value) || 1))}
              />
            </div>
            <button type="submit" className="primary" disabled={stock <= 0 || (!variant && product.variants.length > 0)}>
              Add to cart
            </button>
          </form>
          {added && (
            <Notice>
              Added to your cart. <Link to="/cart">View cart</Link>
            </Notice>
          )}
          <div className="description">
            {product.description.split(/\n{2,}/).map((paragraph, index) => (
              <p key={index}>{paragraph}</p>
            ))}
          </div>
        </div>
      </div>
    </>
  );
}

function Gallery({ product }: { product: ProductDetail }) {
  const [index, setIndex] = useState(0);
  const images = product.images;
  if (images.length === 0) {
    return product.imageUrl ? (
      <img className="gallery-main" src={product.imageUrl} alt={product.name} />
    ) : (
      <div className="gallery-main no-image" role="img" aria-label="No picture yet" />
    );
  }
  const current = images[Math.min(index, images.length - 1)];
  return (
    <div className="gallery">
      <img
        className="gallery-main"
        src={current.urls.large ?? current.urls.medium ?? current.urls.original}
        srcSet={[current.urls.medium && `${current.urls.medium} 600w`, current.urls.large && `${current.urls.large} 1200w`]
          .filter(Boolean)
          .join(", ")}
        sizes="(max-width: 700px) 100vw, 50vw"
        alt={current.alt || product.name}
        width={current.width}
        height={current.height}
      />
      {images.length > 1 && (
        <ul className="thumbs" aria-label="Pictures">
          {images.map((image, i) => (
            <li key={image.imageId}>
              <button
                type="button"
                aria-label={`Show picture ${i + 1} of ${images.length}`}
                aria-pressed={i === index}
                onClick={() => setIndex(i)}
              >
                <img src={image.urls.thumb} alt="" width={64} height={64} />
              </button>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
