"""The seed's products API and what a shop needs around it, through the gateway."""

from __future__ import annotations

import uuid

from tests.conftest import Account, Platform, make_admin


async def _category(
    platform: Platform, admin: Account, name: str, parent: str | None = None
) -> str:
    response = await platform.client.post(
        "/api/v1/categories", json={"name": name, "parent": parent}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    slug: str = response.json()["slug"]
    return slug


async def _product(platform: Platform, admin: Account, **body: object) -> str:
    response = await platform.client.post("/api/v1/products", json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    assert response.json()["message"] == "Product created"
    product_id: str = response.json()["productId"]
    return product_id


async def test_seed_contract_create_list_and_read(platform: Platform) -> None:
    admin = await make_admin(platform)
    electronics = await _category(platform, admin, "Electronics")
    phones = await _category(platform, admin, "Phones", parent=electronics)
    phone = await _product(
        platform,
        admin,
        name="Pocket Phone",
        description="A small phone",
        price="199.99",
        stock=7,
        category=phones,
    )
    await _product(
        platform, admin, name="Desk Lamp", description="Warm light", price="25.00", stock=0
    )
    listing = await platform.client.get("/api/v1/products", params={"category": electronics})
    assert listing.status_code == 200
    assert listing.headers["X-Total-Count"] == "1"
    (item,) = listing.json()
    assert item["productId"] == phone
    assert item["name"] == "Pocket Phone"
    assert item["price"] == "199.99"
    assert item["stock"] == 7
    detail = await platform.client.get(f"/api/v1/products/{phone}")
    assert detail.json()["description"] == "A small phone"
    assert detail.json()["categoryPath"] == ["electronics", "phones"]
    in_stock = await platform.client.get("/api/v1/products", params={"inStock": "true"})
    assert [p["name"] for p in in_stock.json()] == ["Pocket Phone"]
    cheap_first = await platform.client.get("/api/v1/products", params={"sort": "price"})
    assert [p["price"] for p in cheap_first.json()] == ["25.00", "199.99"]
    paged = await platform.client.get("/api/v1/products", params={"limit": 1, "sort": "name"})
    assert paged.headers["X-Total-Count"] == "2"
    assert 'rel="next"' in paged.headers["Link"]
    assert paged.headers["Link"].startswith("</api/v1/products?")


async def test_search_ranks_and_combines_with_filters(platform: Platform) -> None:
    admin = await make_admin(platform)
    kitchen = await _category(platform, admin, "Kitchen")
    await _product(
        platform,
        admin,
        name="Chef Knife",
        description="Steel blade",
        price="80.00",
        stock=3,
        category=kitchen,
    )
    await _product(
        platform,
        admin,
        name="Knife Sharpener",
        description="For any knife",
        price="15.00",
        stock=0,
        category=kitchen,
    )
    await _product(
        platform,
        admin,
        name="Garden Hose",
        description="Not a knife at all, honest",
        price="30.00",
        stock=9,
    )
    found = await platform.client.get("/api/v1/products", params={"q": "knife"})
    names = [p["name"] for p in found.json()]
    assert set(names) == {"Chef Knife", "Knife Sharpener", "Garden Hose"}
    assert names[-1] == "Garden Hose"  # matched in the description only
    combined = await platform.client.get(
        "/api/v1/products", params={"q": "knife", "category": kitchen, "inStock": "true"}
    )
    assert [p["name"] for p in combined.json()] == ["Chef Knife"]
    by_category = await platform.client.get("/api/v1/products", params={"q": "kitchen"})
    assert {p["name"] for p in by_category.json()} == {"Chef Knife", "Knife Sharpener"}
    prefix = await platform.client.get("/api/v1/products", params={"q": "sharp"})
    assert [p["name"] for p in prefix.json()] == ["Knife Sharpener"]
    syntax = await platform.client.get("/api/v1/products", params={"q": 'knife" OR * NEAR('})
    assert syntax.status_code == 200


async def test_variants_stock_ledger_and_reservations(platform: Platform) -> None:
    admin = await make_admin(platform)
    product_id = await _product(
        platform,
        admin,
        name="T-Shirt",
        description="Cotton",
        options=[{"name": "Size", "values": ["S", "M"]}],
        variants=[
            {"sku": "TEE-S", "optionValues": {"Size": "S"}, "price": "12.00", "stock": 2},
            {"sku": "TEE-M", "optionValues": {"Size": "M"}, "price": "14.00", "stock": 5},
        ],
    )
    detail = (await platform.client.get(f"/api/v1/products/{product_id}")).json()
    assert detail["price"] == "12.00"
    assert detail["stock"] == 7
    small = next(v for v in detail["variants"] if v["sku"] == "TEE-S")
    adjusted = await platform.client.post(
        f"/api/v1/inventory/variants/{small['variantId']}/adjustments",
        json={"delta": 3, "reason": "delivery from supplier"},
        headers=admin.headers,
    )
    assert adjusted.status_code == 200, adjusted.text
    assert adjusted.json()["onHand"] == 5
    ledger = await platform.client.get(
        f"/api/v1/inventory/variants/{small['variantId']}/movements", headers=admin.headers
    )
    assert [m["kind"] for m in ledger.json()] == ["adjustment", "adjustment"]
    assert ledger.json()[0]["reason"] == "delivery from supplier"
    assert ledger.json()[0]["actorId"] == str(admin.id)
    too_many = await platform.client.post(
        f"/api/v1/inventory/variants/{small['variantId']}/adjustments",
        json={"delta": -6, "reason": "count"},
        headers=admin.headers,
    )
    assert too_many.status_code == 409


async def test_bad_input_gets_clear_4xx(platform: Platform) -> None:
    admin = await make_admin(platform)
    cases = [
        {"name": "X", "price": "-1.00", "stock": 1},
        {"name": "X", "price": "1.999", "stock": 1},
        {"name": "X", "price": "abc", "stock": 1},
        {"name": "X", "price": "1.00", "stock": -5},
        {"name": "X", "price": "1.00", "category": "no-such-category"},
        {"name": "X"},
        {"name": "X", "price": "1.00", "roles": ["ADMIN"]},
    ]
    for body in cases:
        response = await platform.client.post("/api/v1/products", json=body, headers=admin.headers)
        assert response.status_code == 400, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    huge_page = await platform.client.get("/api/v1/products", params={"limit": 10_000})
    assert huge_page.status_code == 400
    unknown = await platform.client.get("/api/v1/products", params={"category": "nope"})
    assert unknown.status_code == 400
    missing = await platform.client.get(f"/api/v1/products/{uuid.uuid4()}")
    assert missing.status_code == 404
    not_admin = await platform.client.post("/api/v1/products", json={"name": "X", "price": "1.00"})
    assert not_admin.status_code == 401
