import { useEffect, useState, type FormEvent } from "react";
import { useSearchParams } from "react-router";
import { catalog } from "../api/client";
import { ProductGrid } from "../components/ProductCard";
import { Loading, Pager, PageTitle, ProblemMessage } from "../components/ui";
import { useAsync } from "../components/useAsync";
import { flattenCategories, PAGE_SIZE, readListing, toQuery, writeListing, type Listing } from "./listing";

export function ProductList() {
  const [params, setParams] = useSearchParams();
  const listing = readListing(params);
  const key = writeListing(listing).toString();
  const products = useAsync(() => catalog.products(toQuery(listing)), [key]);
  const categories = useAsync(() => catalog.categories(), []);
  const [draft, setDraft] = useState(listing);

  // Back and forward change the URL: the form follows it.
  useEffect(() => setDraft(readListing(params)), [key]); // eslint-disable-line react-hooks/exhaustive-deps

  const go = (next: Listing) => {
    setParams(writeListing(next));
    window.scrollTo({ top: 0 });
  };
  const apply = (event: FormEvent) => {
    event.preventDefault();
    go({ ...draft, page: 1 });
  };
  const options = categories.data ? flattenCategories(categories.data) : [];
  const title = listing.q ? `Results for “${listing.q}”` : "All products";

  return (
    <div className="listing">
      <PageTitle>{title}</PageTitle>
      <form className="filters" onSubmit={apply} aria-label="Filters">
        <div className="field">
          <label htmlFor="f-q">Search</label>
          <input id="f-q" type="search" value={draft.q} onChange={(e) => setDraft({ ...draft, q: e.target.value })} />
        </div>
        <div className="field">
          <label htmlFor="f-category">Category</label>
          <select
            id="f-category"
            value={draft.category}
            onChange={(e) => setDraft({ ...draft, category: e.target.value })}
          >
            <option value="">All categories</option>
            {options.map((option) => (
              <option key={option.slug} value={option.slug}>
                {"\u00a0\u00a0".repeat(option.depth) + option.label}
              </option>
            ))}
          </select>
        </div>
        <div className="field small-field">
          <label htmlFor="f-min">Min price</label>
          <input id="f-min" inputMode="decimal" pattern="[0-9]+(\.[0-9]{1,2})?" value={draft.minPrice}
            onChange={(e) => setDraft({ ...draft, minPrice: e.target.value })} />
        </div>
        <div className="field small-field">
          <label htmlFor="f-max">Max price</label>
          <input id="f-max" inputMode="decimal" pattern="[0-9]+(\.[0-9]{1,2})?" value={draft.maxPrice}
            onChange={(e) => setDraft({ ...draft, maxPrice: e.target.value })} />
        </div>
        <div className="field">
          <label htmlFor="f-sort">Sort by</label>
          <select id="f-sort" value={draft.sort} onChange={(e) => setDraft({ ...draft, sort: e.target.value as Listing["sort"] })}>
            <option value="">{draft.q ? "Relevance" : "Newest"}</option>
            <option value="newest">Newest</option>
            <option value="price">Price: low to high</option>
            <option value="-price">Price: high to low</option>
            <option value="name">Name: A to Z</option>
            <option value="-name">Name: Z to A</option>
          </select>
        </div>
        <div className="field checkbox">
          <input id="f-stock" type="checkbox" checked={draft.inStock}
            onChange={(e) => setDraft({ ...draft, inStock: e.target.checked })} />
          <label htmlFor="f-stock">In stock only</label>
        </div>
        <button type="submit" className="primary">Apply</button>
      </form>
      <ProblemMessage error={products.error} />
      {products.loading && <Loading label="Loading products" />}
      {products.data && !products.loading && (
        <>
          <p className="muted" aria-live="polite">
            {products.data.total} {products.data.total === 1 ? "product" : "products"}
          </p>
          {products.data.items.length === 0 ? (
            <p>No products match. Try fewer filters.</p>
          ) : (
            <ProductGrid products={products.data.items} />
          )}
          <Pager
            offset={(listing.page - 1) * PAGE_SIZE}
            limit={PAGE_SIZE}
            total={products.data.total}
            onPage={(offset) => go({ ...listing, page: offset / PAGE_SIZE + 1 })}
          />
        </>
      )}
    </div>
  );
}
