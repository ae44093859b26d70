import { Link } from "react-router";
import { catalog } from "../api/client";
import { ProductGrid } from "../components/ProductCard";
import { Loading, PageTitle, ProblemMessage } from "../components/ui";
import { useAsync } from "../components/useAsync";

export function Home() {
  const categories = useAsync(() => catalog.categories(), []);
  const featured = useAsync(() => catalog.products({ featured: true, limit: 8 }), []);

  return (
    <div className="home">
      <section className="hero">
        <PageTitle>Welcome to Panthera</PageTitle>
        <p>Everything for the home, the wardrobe and the workshop.</p>
        <Link className="button primary" to="/products">
          Browse the shop
        </Link>
      </section>
      <section aria-labelledby="categories-heading">
        <h2 id="categories-heading">Categories</h2>
        {categories.loading && <Loading label="Loading categories" />}
        <ProblemMessage error={categories.error} />
        {categories.data && (
          <ul className="chips">
            {categories.data.map((category) => (
              <li key={category.slug}>
                <Link to={`/products?category=${encodeURIComponent(category.slug)}`}>
                  {category.name}
                </Link>
              </li>
            ))}
          </ul>
        )}
      </section>
      <section aria-labelledby="featured-heading">
        <h2 id="featured-heading">Featured</h2>
        {featured.loading && <Loading label="Loading featured products" />}
        <ProblemMessage error={featured.error} />
        {featured.data && featured.data.items.length > 0 && <ProductGrid products={featured.data.items} />}
        {featured.data && featured.data.items.length === 0 && (
          <p className="muted">
            Nothing featured yet. Staff mark products as featured in the admin console; a demo
            catalog comes from <code>panthera seed</code>.
          </p>
        )}
      </section>
    </div>
  );
}
