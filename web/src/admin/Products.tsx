import { useState, type FormEvent } from "react";
import { Link, useSearchParams } from "react-router";
import { catalog } from "../api/client";
import { Loading, Pager, PageTitle, ProblemMessage, formatMoney } from "../components/ui";
import { useAsync } from "../components/useAsync";

const LIMIT = 25;

export function AdminProducts() {
  const [params, setParams] = useSearchParams();
  const q = params.get("q") ?? "";
  const offset = Math.max(0, Number(params.get("offset") ?? 0) || 0);
  const [draft, setDraft] = useState(q);
  const list = useAsync(
    () => catalog.products({ q: q || undefined, sort: q ? "relevance" : "newest", limit: LIMIT, offset }),
    [q, offset],
  );
  const search = (event: FormEvent) => {
    event.preventDefault();
    setParams(draft ? { q: draft } : {});
  };
  return (
    <>
      <PageTitle>Products</PageTitle>
      <div className="toolbar">
        <form role="search" onSubmit={search} className="inline-form">
          <label htmlFor="admin-q">Find products</label>
          <input id="admin-q" type="search" value={draft} onChange={(e) => setDraft(e.target.value)} />
          <button type="submit">Search</button>
        </form>
        <Link className="button primary" to="/admin/products/new">
          New product
        </Link>
      </div>
      {list.loading && <Loading label="Loading products" />}
      <ProblemMessage error={list.error} />
      {list.data && (
        <>
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Category</th>
                <th scope="col">Price</th>
                <th scope="col">Stock</th>
              </tr>
            </thead>
            <tbody>
              {list.data.items.map((product) => (
                <tr key={product.productId}>
                  <td>
                    <Link to={`/admin/products/${product.productId}`}>{product.name}</Link>
                    {product.featured && <span className="tag">featured</span>}
                  </td>
                  <td>{product.category ?? "—"}</td>
                  <td>{formatMoney(product.price, product.currency)}</td>
                  <td>{product.stock}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <Pager
            offset={offset}
            limit={LIMIT}
            total={list.data.total}
            onPage={(next) => setParams({ ...(q ? { q } : {}), offset: String(next) })}
          />
        </>
      )}
    </>
  );
}
