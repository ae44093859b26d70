import { describe, expect, it } from "vitest";
import { flattenCategories, readListing, toQuery, writeListing } from "./listing";

describe("listing state in the URL", () => {
  it("round-trips through the query string", () => {
    const params = new URLSearchParams("q=lamp&category=home&minPrice=5&inStock=true&sort=-price&page=3");
    const listing = readListing(params);
    expect(listing).toEqual({
      q: "lamp",
      category: "home",
      minPrice: "5",
      maxPrice: "",
      inStock: true,
      sort: "-price",
      page: 3,
    });
    expect(writeListing(listing).toString()).toBe(params.toString());
  });

  it("ignores what it does not know", () => {
    const listing = readListing(new URLSearchParams("sort=evil&page=-4"));
    expect(listing.sort).toBe("");
    expect(listing.page).toBe(1);
    expect(writeListing(listing).toString()).toBe("");
  });

  it("pages by offset and ranks searches by relevance", () => {
    expect(toQuery(readListing(new URLSearchParams("q=lamp&page=2")))).toMatchObject({
      q: "lamp",
      sort: "relevance",
      limit: 24,
      offset: 24,
    });
    expect(toQuery(readListing(new URLSearchParams(""))).sort).toBe("newest");
  });

  it("flattens the category tree with depths", () => {
    const tree = [
      { categoryId: "1", slug: "home", name: "Home", description: "", parent: null, position: 0,
        children: [{ categoryId: "2", slug: "lamps", name: "Lamps", description: "", parent: "home", position: 0 }] },
    ];
    expect(flattenCategories(tree)).toEqual([
      { slug: "home", label: "Home", depth: 0 },
      { slug: "lamps", label: "Lamps", depth: 1 },
    ]);
  });
});
