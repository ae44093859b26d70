// The product list's state lives in the URL: a link can be shared, a reload keeps
// it, and the back button walks through earlier searches.
import type { Category, ProductQuery, ProductSort } from "../api/types";

export const PAGE_SIZE = 24;
const SORTS: ProductSort[] = ["relevance", "newest", "price", "-price", "name", "-name"];

export interface Listing {
  q: string;
  category: string;
  minPrice: string;
  maxPrice: string;
  inStock: boolean;
  sort: ProductSort | "";
  page: number;
}

export function readListing(params: URLSearchParams): Listing {
  const sort = params.get("sort") ?? "";
  const page = Number.parseInt(params.get("page") ?? "1", 10);
  return {
    q: params.get("q") ?? "",
    category: params.get("category") ?? "",
    minPrice: params.get("minPrice") ?? "",
    maxPrice: params.get("maxPrice") ?? "",
    inStock: params.get("inStock") === "true",
    sort: (SORTS as string[]).includes(sort) ? (sort as ProductSort) : "",
    page: Number.isFinite(page) && page > 0 ? page : 1,
  };
}

export function writeListing(listing: Listing): URLSearchParams {
  const params = new URLSearchParams();
  if (listing.q) params.set("q", listing.q);
  if (listing.category) params.set("category", listing.category);
  if (listing.minPrice) params.set("minPrice", listing.minPrice);
  if (listing.maxPrice) params.set("maxPrice", listing.maxPrice);
  if (listing.inStock) params.set("inStock", "true");
  if (listing.sort) params.set("sort", listing.sort);
  if (listing.page > 1) params.set("page", String(listing.page));
  return params;
}

export function toQuery(listing: Listing): ProductQuery {
  return {
    q: listing.q || undefined,
    category: listing.category || undefined,
    minPrice: listing.minPrice || undefined,
    maxPrice: listing.maxPrice || undefined,
    inStock: listing.inStock || undefined,
    // Relevance needs words to rank by; without them the newest come first.
    sort: listing.sort || (listing.q ? "relevance" : "newest"),
    limit: PAGE_SIZE,
    offset: (listing.page - 1) * PAGE_SIZE,
  };
}

export interface CategoryOption {
  slug: string;
  label: string;
  depth: number;
}

export function flattenCategories(tree: Category[], depth = 0): CategoryOption[] {
  return tree.flatMap((category) => [
    { slug: category.slug, label: category.name, depth },
    ...flattenCategories(category.children ?? [], depth + 1),
  ]);
}
