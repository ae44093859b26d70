"""Use cases of the catalog: categories, products and variants, prices, listing."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.catalog import errors, inventory
from panthera.catalog.events import (
    CategoryChanged,
    PriceChanged,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    VariantSummary,
)
from panthera.catalog.models import Category, Product, ProductImage, Variant
from panthera.catalog.search import SearchIndex
from panthera.kernel.db import UnitOfWork
from panthera.kernel.errors import InvalidInput
from panthera.kernel.money import InvalidAmount, Money


def _now() -> datetime:
    return datetime.now(UTC)


def slugify(text: str) -> str:
    """A URL slug: ASCII, lower case, words joined by hyphens."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:100] or "item"


def parse_price(text: str, currency: str) -> int:
    try:
        return Money.parse(text, currency).amount
    except InvalidAmount as exc:
        raise InvalidInput(str(exc), field="price") from exc


# ---------------------------------------------------------------- categories


async def category_by_slug(session: AsyncSession, slug: str) -> Category | None:
    return (
        await session.execute(select(Category).where(Category.slug == slug))
    ).scalar_one_or_none()


async def create_category(
    uow: UnitOfWork,
    *,
    name: str,
    slug: str | None,
    description: str,
    parent: str | None,
    position: int,
) -> Category:
    session = uow.session
    slug = slug or slugify(name)
    parent_category = None
    if parent is not None:
        parent_category = await category_by_slug(session, parent)
        if parent_category is None:
            raise errors.UnknownCategory(f"No category has the slug {parent!r}.")
    if await category_by_slug(session, slug) is not None:
        raise errors.SlugTaken()
    now = _now()
    category = Category(
        id=uuid.uuid4(),
        slug=slug,
        name=name,
        description=description,
        parent_id=parent_category.id if parent_category else None,
        path=(parent_category.path if parent_category else "/") + slug + "/",
        position=position,
        created_at=now,
        updated_at=now,
    )
    session.add(category)
    uow.publish(
        CategoryChanged(category_id=category.id, slug=slug, change="created", occurred_at=now)
    )
    return category


async def update_category(uow: UnitOfWork, slug: str, changes: dict[str, Any]) -> Category:
    category = await category_by_slug(uow.session, slug)
    if category is None:
        raise errors.CategoryNotFound()
    for key, value in changes.items():
        setattr(category, key, value)
    category.updated_at = _now()
    uow.publish(
        CategoryChanged(
            category_id=category.id,
            slug=category.slug,
            change="updated",
            occurred_at=category.updated_at,
        )
    )
    return category


async def delete_category(uow: UnitOfWork, slug: str) -> None:
    session = uow.session
    category = await category_by_slug(session, slug)
    if category is None:
        raise errors.CategoryNotFound()
    children = await session.scalar(select(func.count()).where(Category.parent_id == category.id))
    products = await session.scalar(
        select(func.count()).where(Product.category_id == category.id, Product.status == "active")
    )
    if children or products:
        raise errors.CategoryInUse()
    await session.delete(category)
    uow.publish(
        CategoryChanged(category_id=category.id, slug=slug, change="deleted", occurred_at=_now())
    )


async def all_categories(session: AsyncSession) -> list[Category]:
    return list((await session.execute(select(Category).order_by(Category.path))).scalars())


# ------------------------------------------------------------------ products


@dataclass(frozen=True)
class VariantSpec:
    price: str
    stock: int
    sku: str | None = None
    title: str | None = None
    option_values: dict[str, str] = field(default_factory=dict)


async def _unique_slug(session: AsyncSession, wanted: str, *, explicit: bool) -> str:
    taken = await session.scalar(select(func.count()).where(Product.slug == wanted))
    if not taken:
        return wanted
    if explicit:
        raise errors.SlugTaken()
    return f"{wanted}-{uuid.uuid4().hex[:6]}"


def _summaries(variants: Sequence[Variant]) -> list[VariantSummary]:
    return [
        VariantSummary(variant_id=v.id, sku=v.sku, price_amount=v.price_amount) for v in variants
    ]


async def create_product(
    uow: UnitOfWork,
    search: SearchIndex,
    *,
    name: str,
    description: str,
    currency: str,
    category: str | None,
    slug: str | None,
    featured: bool,
    options: list[dict[str, Any]],
    variants: Sequence[VariantSpec],
    actor_id: uuid.UUID | None,
    product_id: uuid.UUID | None = None,
) -> Product:
    """A product with its variants and opening stock (recorded in the ledger).

    ``product_id`` lets a caller that prepares files under the id (images) choose it.
    """
    session = uow.session
    if not variants:
        raise InvalidInput("A product needs a price (or variants with prices).", field="price")
    category_row = None
    if category is not None:
        category_row = await category_by_slug(session, category)
        if category_row is None:
            raise errors.UnknownCategory(f"No category has the slug {category!r}.")
    _check_options(options, variants)
    now = _now()
    product = Product(
        id=product_id or uuid.uuid4(),
        slug=await _unique_slug(session, slug or slugify(name), explicit=slug is not None),
        name=name,
        description=description,
        category_id=category_row.id if category_row else None,
        currency=currency,
        options=options,
        featured=featured,
        status="active",
        price_amount=0,
        available=0,
        revision=1,
        created_at=now,
        updated_at=now,
    )
    session.add(product)
    rows = []
    for position, spec in enumerate(variants):
        sku = spec.sku or f"{product.slug[:40].upper()}-{uuid.uuid4().hex[:8].upper()}"
        rows.append(
            Variant(
                id=uuid.uuid4(),
                product_id=product.id,
                sku=sku,
                title=spec.title or (" / ".join(spec.option_values.values()) or name),
                option_values=spec.option_values,
                price_amount=parse_price(spec.price, currency),
                on_hand=spec.stock,
                reserved=0,
                position=position,
                created_at=now,
                updated_at=now,
            )
        )
    # Nothing else can see the new rows yet: the totals are known without asking.
    product.price_amount = min(row.price_amount for row in rows)
    product.available = sum(row.on_hand for row in rows)
    session.add_all(rows)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise errors.SkuTaken() from exc
    for variant in rows:
        if variant.on_hand:
            # Opening stock goes in the ledger (and out as stock.changed) like any adjustment.
            inventory._record(
                uow,
                variant,
                kind="adjustment",
                on_hand_delta=variant.on_hand,
                reserved_delta=0,
                reason="opening stock",
                actor_id=actor_id,
            )
    await search.index(session, product, category_row)
    uow.publish(
        ProductCreated(
            product_id=product.id,
            revision=product.revision,
            name=product.name,
            slug=product.slug,
            category_id=product.category_id,
            currency=currency,
            variants=_summaries(rows),
            occurred_at=now,
        )
    )
    return product


def _check_options(options: list[dict[str, Any]], variants: Sequence[VariantSpec]) -> None:
    allowed = {option["name"]: set(option["values"]) for option in options}
    seen: set[tuple[tuple[str, str], ...]] = set()
    for spec in variants:
        for key, value in spec.option_values.items():
            if key not in allowed or value not in allowed[key]:
                raise InvalidInput(
                    f"Variant option {key}={value!r} is not among the product's options."
                )
        combination = tuple(sorted(spec.option_values.items()))
        if options and combination in seen:
            raise InvalidInput("Two variants have the same options.")
        seen.add(combination)


async def active_product(
    session: AsyncSession, product_id: uuid.UUID, *, for_update: bool = False
) -> Product:
    query = select(Product).where(Product.id == product_id, Product.status == "active")
    if for_update:
        query = query.with_for_update()
    product = (await session.execute(query)).scalar_one_or_none()
    if product is None:
        raise errors.ProductNotFound()
    return product


async def _lock_variants(session: AsyncSession, *conditions: Any) -> None:
    """Lock variant rows, in id order, before their product: stock changes lock the
    variant first then the product, and one lock order for every writer is what
    keeps a price change and a reservation from deadlocking on PostgreSQL."""
    await session.execute(
        select(Variant.id).where(*conditions).order_by(Variant.id).with_for_update()
    )


async def variants_of(session: AsyncSession, product_id: uuid.UUID) -> list[Variant]:
    return list(
        (
            await session.execute(
                select(Variant).where(Variant.product_id == product_id).order_by(Variant.position)
            )
        ).scalars()
    )


async def update_product(
    uow: UnitOfWork, search: SearchIndex, product_id: uuid.UUID, changes: dict[str, Any]
) -> Product:
    """Change a product's fields; a price given here applies to every variant."""
    session = uow.session
    if "price" in changes:
        await _lock_variants(session, Variant.product_id == product_id)
    product = await active_product(session, product_id, for_update=True)
    changed: list[str] = []
    now = _now()
    category_row = await session.get(Category, product.category_id) if product.category_id else None
    if "category" in changes:
        slug = changes.pop("category")
        category_row = await category_by_slug(session, slug)
        if category_row is None:
            raise errors.UnknownCategory(f"No category has the slug {slug!r}.")
        if product.category_id != category_row.id:
            product.category_id = category_row.id
            changed.append("category")
    price = changes.pop("price", None)
    for key, value in changes.items():
        if getattr(product, key) != value:
            setattr(product, key, value)
            changed.append(key)
    variants = await variants_of(session, product_id)
    if price is not None:
        amount = parse_price(price, product.currency)
        for variant in variants:
            if variant.price_amount != amount:
                _price_changed(uow, product, variant, amount, now)
                variant.price_amount = amount
                changed.append("price")
        await inventory._refresh_product_totals(session, product.id)
    if not changed:
        return product
    product.revision += 1
    product.updated_at = now
    await session.flush()
    await search.index(session, product, category_row)
    uow.publish(
        ProductUpdated(
            product_id=product.id,
            revision=product.revision,
            name=product.name,
            slug=product.slug,
            category_id=product.category_id,
            currency=product.currency,
            variants=_summaries(variants),
            changed=sorted(set(changed)),
            occurred_at=now,
        )
    )
    return product


def _price_changed(
    uow: UnitOfWork, product: Product, variant: Variant, amount: int, now: datetime
) -> None:
    uow.publish(
        PriceChanged(
            product_id=product.id,
            revision=product.revision + 1,
            variant_id=variant.id,
            sku=variant.sku,
            currency=product.currency,
            old_amount=variant.price_amount,
            new_amount=amount,
            occurred_at=now,
        )
    )


async def update_variant(
    uow: UnitOfWork,
    product_id: uuid.UUID,
    variant_id: uuid.UUID,
    *,
    price: str | None,
    title: str | None,
) -> Variant:
    session = uow.session
    await _lock_variants(session, Variant.id == variant_id)
    product = await active_product(session, product_id, for_update=True)
    variant = await session.get(Variant, variant_id)
    if variant is None or variant.product_id != product_id:
        raise errors.VariantNotFound()
    now = _now()
    if title is not None:
        variant.title = title
    if price is not None:
        amount = parse_price(price, product.currency)
        if amount != variant.price_amount:
            _price_changed(uow, product, variant, amount, now)
            variant.price_amount = amount
            product.revision += 1
    variant.updated_at = now
    product.updated_at = now
    await session.flush()
    await inventory._refresh_product_totals(session, product.id)
    return variant


async def archive_product(uow: UnitOfWork, search: SearchIndex, product_id: uuid.UUID) -> None:
    """Take a product out of the shop; orders that named it keep their history."""
    session = uow.session
    product = await active_product(session, product_id, for_update=True)
    product.status = "archived"
    product.revision += 1
    product.updated_at = _now()
    await search.remove(session, product.id)
    uow.publish(
        ProductDeleted(
            product_id=product.id, revision=product.revision, occurred_at=product.updated_at
        )
    )


# -------------------------------------------------------------------- images


async def _announce_images_changed(uow: UnitOfWork, product: Product) -> None:
    now = _now()
    product.revision += 1
    product.updated_at = now
    await uow.session.flush()
    variants = await variants_of(uow.session, product.id)
    uow.publish(
        ProductUpdated(
            product_id=product.id,
            revision=product.revision,
            name=product.name,
            slug=product.slug,
            category_id=product.category_id,
            currency=product.currency,
            variants=_summaries(variants),
            changed=["images"],
            occurred_at=now,
        )
    )


async def add_image(
    uow: UnitOfWork,
    product_id: uuid.UUID,
    *,
    image_id: uuid.UUID,
    keys: dict[str, str],
    width: int,
    height: int,
    alt: str,
    announce: bool = True,
) -> ProductImage:
    """Attach stored image files to a product, after its other images.

    ``announce=False`` is for a product created in the same unit of work, whose
    ``product.created`` already tells the world about it.
    """
    session = uow.session
    product = await active_product(session, product_id, for_update=True)
    last = await session.scalar(
        select(func.max(ProductImage.position)).where(ProductImage.product_id == product_id)
    )
    image = ProductImage(
        id=image_id,
        product_id=product_id,
        position=0 if last is None else last + 1,
        alt=alt,
        keys=dict(keys),
        width=width,
        height=height,
        created_at=_now(),
    )
    session.add(image)
    if last is None:
        product.cover_image = image.cover_key
    if announce:
        await _announce_images_changed(uow, product)
    else:
        await session.flush()
    return image


async def remove_image(uow: UnitOfWork, product_id: uuid.UUID, image_id: uuid.UUID) -> ProductImage:
    """Detach an image; the caller deletes its stored files once this is committed."""
    session = uow.session
    product = await active_product(session, product_id, for_update=True)
    image = await session.get(ProductImage, image_id)
    if image is None or image.product_id != product_id:
        raise errors.ImageNotFound()
    await session.delete(image)
    await session.flush()
    first = (await images_of(session, product_id))[:1]
    product.cover_image = first[0].cover_key if first else None
    await _announce_images_changed(uow, product)
    return image


async def images_of(session: AsyncSession, product_id: uuid.UUID) -> list[ProductImage]:
    return list(
        (
            await session.execute(
                select(ProductImage)
                .where(ProductImage.product_id == product_id)
                .order_by(ProductImage.position)
            )
        ).scalars()
    )


# ------------------------------------------------------------------- listing


@dataclass(frozen=True)
class ProductQuery:
    limit: int = 20
    offset: int = 0
    category: str | None = None
    q: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool | None = None
    featured: bool | None = None
    sort: str = "newest"


ORDERINGS: dict[str, Any] = {
    "newest": (Product.created_at.desc(), Product.id),
    "oldest": (Product.created_at.asc(), Product.id),
    "price": (Product.price_amount.asc(), Product.id),
    "-price": (Product.price_amount.desc(), Product.id),
    "name": (Product.name.asc(), Product.id),
    "-name": (Product.name.desc(), Product.id),
}


Bind = Callable[[str, Any], Any]


def _literal(_name: str, value: Any) -> Any:
    return value


def listing_conditions(query: ProductQuery, category_path: Any, bind: Bind = _literal) -> list[Any]:
    """The ``WHERE`` of a listing: active products and the query's filters.

    ``category_path`` is the path of the category whose subtree is asked for (a value
    or an expression), ``None`` for every category. ``bind(name, value)`` gives what a
    filter compares with: the value itself, or a named parameter of a statement
    compiled once for every query of its shape.
    """
    conditions: list[Any] = [Product.status == "active"]
    if category_path is not None:
        subtree = select(Category.id).where(Category.path.startswith(category_path))
        conditions.append(Product.category_id.in_(subtree))
    if query.min_price is not None:
        conditions.append(Product.price_amount >= bind("min_price", query.min_price))
    if query.max_price is not None:
        conditions.append(Product.price_amount <= bind("max_price", query.max_price))
    if query.in_stock is True:
        conditions.append(Product.available > 0)
    elif query.in_stock is False:
        conditions.append(Product.available <= 0)
    if query.featured is not None:
        conditions.append(Product.featured == bind("featured", query.featured))
    return conditions


def listing_order(query: ProductQuery) -> str:
    """The name of the listing's order: a key of :data:`ORDERINGS`, or ``"relevance"``."""
    if query.q and query.sort in ("relevance", "newest"):
        return "relevance"
    return query.sort if query.sort in ORDERINGS else "newest"


async def list_products(
    session: AsyncSession, search: SearchIndex, query: ProductQuery
) -> tuple[list[tuple[Product, str | None]], int]:
    """A page of active products with their category slugs, and the total that match."""
    category_path = None
    if query.category is not None:
        category = await category_by_slug(session, query.category)
        if category is None:
            raise errors.UnknownCategory(f"No category has the slug {query.category!r}.")
        category_path = category.path
    conditions = listing_conditions(query, category_path)
    base: Any = select(Product, Category.slug).outerjoin(
        Category, Category.id == Product.category_id
    )
    total_query: Any = select(func.count()).select_from(Product)
    order = listing_order(query)
    if query.q:
        matches = search.matches(search.argument(query.q))
        base = base.join(matches, matches.c.product_id == Product.id)
        total_query = total_query.join(matches, matches.c.product_id == Product.id)
        ordering: Any = (
            (matches.c.rank.desc(), Product.id) if order == "relevance" else ORDERINGS[order]
        )
    else:
        ordering = ORDERINGS["newest" if order == "relevance" else order]
    total = int(await session.scalar(total_query.where(and_(*conditions))) or 0)
    rows = (
        await session.execute(
            base.where(and_(*conditions))
            .order_by(*ordering)
            .limit(query.limit)
            .offset(query.offset)
        )
    ).all()
    return [(row[0], row[1]) for row in rows], total


async def first_images(
    session: AsyncSession, product_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, ProductImage]:
    if not product_ids:
        return {}
    rows = (
        await session.execute(
            select(ProductImage)
            .where(ProductImage.product_id.in_(product_ids))
            .order_by(ProductImage.product_id, ProductImage.position)
        )
    ).scalars()
    found: dict[uuid.UUID, ProductImage] = {}
    for image in rows:
        found.setdefault(image.product_id, image)
    return found
