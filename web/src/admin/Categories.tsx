import { useState, type FormEvent } from "react";
import { catalog } from "../api/client";
import type { Category } from "../api/types";
import { Loading, PageTitle, ProblemMessage } from "../components/ui";
import { useAsync } from "../components/useAsync";
import { flattenCategories } from "../pages/listing";

export function AdminCategories() {
  const tree = useAsync(() => catalog.categories(), []);
  const [form, setForm] = useState({ name: "", parent: "", description: "" });
  const [error, setError] = useState<unknown>(null);

  const create = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      await catalog.createCategory({
        name: form.name,
        parent: form.parent || null,
        description: form.description,
      });
      setForm({ name: "", parent: "", description: "" });
      tree.reload();
    } catch (failure) {
      setError(failure);
    }
  };
  const options = flattenCategories(tree.data ?? []);
  return (
    <>
      <PageTitle>Categories</PageTitle>
      <form onSubmit={create} className="inline-form" aria-label="New category">
        <div className="field">
          <label htmlFor="c-name">New category name</label>
          <input id="c-name" required value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} />
        </div>
        <div className="field">
          <label htmlFor="c-parent">Inside</label>
          <select id="c-parent" value={form.parent} onChange={(e) => setForm({ ...form, parent: e.target.value })}>
            <option value="">(top level)</option>
            {options.map((o) => (
              <option key={o.slug} value={o.slug}>
                {"\u00a0\u00a0".repeat(o.depth) + o.label}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="c-description">Description</label>
          <input id="c-description" value={form.description}
            onChange={(e) => setForm({ ...form, description: e.target.value })} />
        </div>
        <button type="submit" className="primary">Add category</button>
      </form>
      <ProblemMessage error={error} title="The category was not changed" />
      {tree.loading && <Loading label="Loading categories" />}
      <ProblemMessage error={tree.error} />
      {tree.data && <CategoryTree categories={tree.data} onChange={tree.reload} onError={setError} />}
    </>
  );
}

function CategoryTree({
  categories,
  onChange,
  onError,
}: {
  categories: Category[];
  onChange: () => void;
  onError: (error: unknown) => void;
}) {
  return (
    <ul className="tree">
      {categories.map((category) => (
        <CategoryRow key={category.slug} category={category} onChange={onChange} onError={onError} />
      ))}
    </ul>
  );
}

function CategoryRow({
  category,
  onChange,
  onError,
}: {
  category: Category;
  onChange: () => void;
  onError: (error: unknown) => void;
}) {
  const [editing, setEditing] = useState(false);
  const [name, setName] = useState(category.name);
  const save = async (event: FormEvent) => {
    event.preventDefault();
    try {
      await catalog.updateCategory(category.slug, { name });
      setEditing(false);
      onChange();
    } catch (failure) {
      onError(failure);
    }
  };
  const remove = async () => {
    if (!window.confirm(`Delete the category “${category.name}”?`)) return;
    try {
      await catalog.deleteCategory(category.slug);
      onChange();
    } catch (failure) {
      onError(failure);
    }
  };
  return (
    <li>
      {editing ? (
        <form onSubmit={save} className="inline-form">
          <label htmlFor={`rename-${category.slug}`} className="visually-hidden">
            New name for {category.name}
          </label>
          <input id={`rename-${category.slug}`} value={name} required onChange={(e) => setName(e.target.value)} />
          <button type="submit">Save</button>
          <button type="button" className="link" onClick={() => setEditing(false)}>Cancel</button>
        </form>
      ) : (
        <span className="row">
          <span>
            {category.name} <span className="muted small">({category.slug})</span>
          </span>
          <button type="button" className="link" onClick={() => setEditing(true)}>
            Rename<span className="visually-hidden"> {category.name}</span>
          </button>
          <button type="button" className="link danger" onClick={() => void remove()}>
            Delete<span className="visually-hidden"> {category.name}</span>
          </button>
        </span>
      )}
      {category.children && category.children.length > 0 && (
        <CategoryTree categories={category.children} onChange={onChange} onError={onError} />
      )}
    </li>
  );
}
