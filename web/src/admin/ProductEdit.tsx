import { useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { catalog } from "../api/client";
import type { ProductDetail, Variant } from "../api/types";
import { Loading, Notice, PageTitle, ProblemMessage, formatDate } from "../components/ui";
import { useAsync } from "../components/useAsync";
import { flattenCategories } from "../pages/listing";

export function AdminProductEdit() {
  const { productId } = useParams();
  const product = useAsync(
    () => (productId ? catalog.product(productId) : Promise.resolve(undefined)),
    [productId],
  );
  if (!productId) return <ProductForm />;
  if (product.loading && !product.data) return <Loading label="Loading product" />;
  if (product.error) return <ProblemMessage error={product.error} />;
  if (!product.data) return null;
  return (
    <>
      <ProductForm product={product.data} onSaved={product.reload} />
      <Images product={product.data} onChange={product.reload} />
      <Variants product={product.data} onChange={product.reload} />
    </>
  );
}

function ProductForm({ product, onSaved }: { product?: ProductDetail; onSaved?: () => void }) {
  const navigate = useNavigate();
  const categories = useAsync(() => catalog.categories(), []);
  const [form, setForm] = useState({
    name: product?.name ?? "",
    description: product?.description ?? "",
    category: product?.category ?? "",
    price: product?.price ?? "",
    stock: "0",
    featured: product?.featured ?? false,
  });
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    setSaved(false);
    try {
      if (product) {
        await catalog.updateProduct(product.productId, {
          name: form.name,
          description: form.description,
          category: form.category || null,
          price: form.price,
          featured: form.featured,
        });
        setSaved(true);
        onSaved?.();
      } else {
        const created = await catalog.createProduct({
          name: form.name,
          description: form.description,
          category: form.category || null,
          price: form.price,
          stock: Number(form.stock) || 0,
          featured: form.featured,
        });
        navigate(`/admin/products/${created.productId}`, { replace: true });
      }
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  const remove = async () => {
    if (!product || !window.confirm(`Remove “${product.name}” from the shop?`)) return;
    try {
      await catalog.deleteProduct(product.productId);
      navigate("/admin");
    } catch (failure) {
      setError(failure);
    }
  };

  return (
    <section>
      <p>
        <Link to="/admin">← Products</Link>
        {product && (
          <>
            {" · "}
            <Link to={`/products/${product.productId}`}>View in shop</Link>
          </>
        )}
      </p>
      <PageTitle>{product ? `Edit ${product.name}` : "New product"}</PageTitle>
      <form onSubmit={submit} className="stack">
        <div className="field">
          <label htmlFor="p-name">Name</label>
          <input id="p-name" required maxLength={200} value={form.name}
            onChange={(e) => setForm({ ...form, name: e.target.value })} />
        </div>
        <div className="field">
          <label htmlFor="p-description">Description</label>
          <textarea id="p-description" rows={5} value={form.description}
            onChange={(e) => setForm({ ...form, description: e.target.value })} />
        </div>
        <div className="field">
          <label htmlFor="p-category">Category</label>
          <select id="p-category" value={form.category} onChange={(e) => setForm({ ...form, category: e.target.value })}>
            <option value="">No category</option>
            {flattenCategories(categories.data ?? []).map((option) => (
              <option key={option.slug} value={option.slug}>
                {"\u00a0\u00a0".repeat(option.depth) + option.label}
              </option>
            ))}
          </select>
        </div>
        <div className="field small-field">
          <label htmlFor="p-price">Price</label>
          <input id="p-price" required inputMode="decimal" pattern="[0-9]+(\.[0-9]{1,2})?" value={form.price}
            onChange={(e) => setForm({ ...form, price: e.target.value })} />
        </div>
        {!product && (
          <div className="field small-field">
            <label htmlFor="p-stock">Initial stock</label>
            <input id="p-stock" type="number" min={0} value={form.stock}
              onChange={(e) => setForm({ ...form, stock: e.target.value })} />
          </div>
        )}
        <div className="field checkbox">
          <input id="p-featured" type="checkbox" checked={form.featured}
            onChange={(e) => setForm({ ...form, featured: e.target.checked })} />
          <label htmlFor="p-featured">Featured on the home page</label>
        </div>
        <ProblemMessage error={error} title="The product was not saved" />
        {saved && <Notice>Saved.</Notice>}
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            {product ? "Save changes" : "Create product"}
          </button>
          {product && (
            <button type="button" className="danger" onClick={() => void remove()}>
              Remove product
            </button>
          )}
        </div>
      </form>
    </section>
  );
}

function Images({ product, onChange }: { product: ProductDetail; onChange: () => void }) {
  const [file, setFile] = useState<File | null>(null);
  const [alt, setAlt] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [inputKey, setInputKey] = useState(0);

  const upload = async (event: FormEvent) => {
    event.preventDefault();
    if (!file) return;
    setBusy(true);
    setError(null);
    try {
      await catalog.uploadImage(product.productId, file, alt);
      setFile(null);
      setAlt("");
      setInputKey((k) => k + 1);
      onChange();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  const remove = async (imageId: string) => {
    setError(null);
    try {
      await catalog.deleteImage(product.productId, imageId);
      onChange();
    } catch (failure) {
      setError(failure);
    }
  };
  return (
    <section aria-labelledby="images-heading">
      <h2 id="images-heading">Images</h2>
      {product.images.length === 0 && <p className="muted">No images yet.</p>}
      <ul className="image-list">
        {product.images.map((image) => (
          <li key={image.imageId}>
            <img src={image.urls.thumb} alt={image.alt || product.name} width={100} height={100} />
            <button type="button" className="link" onClick={() => void remove(image.imageId)}>
              Delete<span className="visually-hidden"> image {image.alt}</span>
            </button>
          </li>
        ))}
      </ul>
      <form onSubmit={upload} className="inline-form">
        <div className="field">
          <label htmlFor="image-file">Image file (JPEG, PNG, WebP or GIF)</label>
          <input key={inputKey} id="image-file" type="file" accept="image/jpeg,image/png,image/webp,image/gif" required
            onChange={(e) => setFile(e.target.files?.[0] ?? null)} />
        </div>
        <div className="field">
          <label htmlFor="image-alt">Description for screen readers</label>
          <input id="image-alt" value={alt} maxLength={300} onChange={(e) => setAlt(e.target.value)} />
        </div>
        <button type="submit" disabled={!file || busy}>
          {busy ? "Uploading…" : "Upload image"}
        </button>
      </form>
      <ProblemMessage error={error} title="The image was not changed" />
    </section>
  );
}

function Variants({ product, onChange }: { product: ProductDetail; onChange: () => void }) {
  return (
    <section aria-labelledby="variants-heading">
      <h2 id="variants-heading">Variants and stock</h2>
      <table className="table">
        <thead>
          <tr>
            <th scope="col">Variant</th>
            <th scope="col">SKU</th>
            <th scope="col">Price</th>
            <th scope="col">On hand</th>
            <th scope="col">Reserved</th>
            <th scope="col">Available</th>
          </tr>
        </thead>
        <tbody>
          {product.variants.map((variant) => (
            <tr key={variant.variantId}>
              <td>{variant.title || "Default"}</td>
              <td>{variant.sku}</td>
              <td>{variant.price}</td>
              <td>{variant.onHand}</td>
              <td>{variant.reserved}</td>
              <td data-testid={`available-${variant.sku}`}>{variant.stock}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {product.variants.map((variant) => (
        <StockAdjuster key={variant.variantId} productId={product.productId} variant={variant} onChange={onChange} />
      ))}
    </section>
  );
}

function StockAdjuster({
  productId,
  variant,
  onChange,
}: {
  productId: string;
  variant: Variant;
  onChange: () => void;
}) {
  const [delta, setDelta] = useState("");
  const [reason, setReason] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [showLedger, setShowLedger] = useState(false);
  const [version, setVersion] = useState(0);
  const [price, setPrice] = useState(variant.price);
  const id = variant.variantId;
  const savePrice = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      await catalog.updateVariant(productId, id, { price });
      onChange();
    } catch (failure) {
      setError(failure);
    }
  };
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      await catalog.adjustStock(id, Number(delta), reason);
      setDelta("");
      setReason("");
      setVersion((v) => v + 1);
      onChange();
    } catch (failure) {
      setError(failure);
    }
  };
  return (
    <details className="adjuster">
      <summary>Adjust stock or price of {variant.title || "Default"} ({variant.sku})</summary>
      <form onSubmit={submit} className="inline-form">
        <div className="field small-field">
          <label htmlFor={`delta-${id}`}>Change (+ adds, − removes)</label>
          <input id={`delta-${id}`} type="number" required step={1} value={delta}
            onChange={(e) => setDelta(e.target.value)} />
        </div>
        <div className="field">
          <label htmlFor={`reason-${id}`}>Reason</label>
          <input id={`reason-${id}`} required maxLength={200} placeholder="e.g. delivery from supplier"
            value={reason} onChange={(e) => setReason(e.target.value)} />
        </div>
        <button type="submit">Adjust stock</button>
      </form>
      <form onSubmit={savePrice} className="inline-form">
        <div className="field small-field">
          <label htmlFor={`price-${id}`}>Price of this variant</label>
          <input id={`price-${id}`} required inputMode="decimal" pattern="[0-9]+(\.[0-9]{1,2})?" value={price}
            onChange={(e) => setPrice(e.target.value)} />
        </div>
        <button type="submit">Save price</button>
      </form>
      <ProblemMessage error={error} title="The variant was not changed" />
      <button type="button" className="link" onClick={() => setShowLedger(!showLedger)} aria-expanded={showLedger}>
        {showLedger ? "Hide" : "Show"} stock history
      </button>
      {showLedger && <Ledger variantId={id} version={version} />}
    </details>
  );
}

function Ledger({ variantId, version }: { variantId: string; version: number }) {
  const movements = useAsync(() => catalog.movements(variantId), [variantId, version]);
  if (movements.loading) return <Loading label="Loading stock history" />;
  if (movements.error) return <ProblemMessage error={movements.error} />;
  return (
    <table className="table compact">
      <thead>
        <tr>
          <th scope="col">When</th>
          <th scope="col">Kind</th>
          <th scope="col">Change</th>
          <th scope="col">On hand after</th>
          <th scope="col">Reason</th>
        </tr>
      </thead>
      <tbody>
        {movements.data?.items.map((m) => (
          <tr key={m.movementId}>
            <td>{formatDate(m.createdAt)}</td>
            <td>{m.kind}</td>
            <td>{m.onHandDelta > 0 ? `+${m.onHandDelta}` : m.onHandDelta}</td>
            <td>{m.onHandAfter}</td>
            <td>{m.reason}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
