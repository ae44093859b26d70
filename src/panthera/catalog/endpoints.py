"""Routes of the catalog: the seed's products API, categories, inventory and reservations."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select

from panthera.catalog import errors, inventory, presenters, service
from panthera.catalog.deps import Catalog, CatalogDeps
from panthera.catalog.models import Category, ProductImage, StockMovement, Variant
from panthera.catalog.schemas import (
    CallOffOut,
    CategoryIn,
    CategoryOut,
    CategoryUpdate,
    ProductCreate,
    ProductCreated,
    ProductDetail,
    ProductSort,
    ProductSummary,
    ProductUpdate,
    QuoteIn,
    QuoteLineOut,
    QuoteOut,
    RejectedLineOut,
    ReservationIn,
    ReservationLineIn,
    ReservationLineOut,
    ReservationOut,
    StockAdjustment,
    StockMovementOut,
    VariantOut,
    VariantUpdate,
)
from panthera.kernel.errors import InvalidInput
from panthera.kernel.http.direct import (
    Declined,
    body_as,
    boolean,
    bounded_int,
    bounded_text,
    direct_route,
    model_response,
    single_values,
)
from panthera.kernel.http.paging import total_count_headers
from panthera.kernel.money import InvalidAmount, Money
from panthera.kernel.security.permissions import (
    AdminPrincipal,
    internal_only,
    is_internal_caller,
    public,
)

router = APIRouter()
Responses = dict[int | str, dict[str, Any]]
_invalid: Responses = {400: {"description": "Invalid input"}}
_admin: Responses = {401: {"description": "Unauthorized"}, 403: {"description": "Forbidden"}}
_missing: Responses = {404: {"description": "Not found"}}
_conflict: Responses = {409: {"description": "Conflict"}}


def _minor(text: str | None, currency: str, name: str) -> int | None:
    if text is None:
        return None
    try:
        return Money.parse(text, currency).amount
    except InvalidAmount as exc:
        raise InvalidInput(str(exc), field=name) from exc


_LIST_PARAMETERS = frozenset(
    {"category", "q", "limit", "offset", "sort", "minPrice", "maxPrice", "inStock", "featured"}
)
_SORTS = {sort.value: sort for sort in ProductSort}


async def _list_products_direct(request: Request) -> Response | None:
    """The list route without FastAPI's per-request parameter work, for the queries whose
    every parameter is well-formed; anything else goes to :func:`list_products`."""
    try:
        values = single_values(request.scope.get("query_string", b""), _LIST_PARAMETERS)
        sort = _SORTS.get(values.get("sort", ProductSort.NEWEST.value))
        if sort is None:
            return None
        limit = bounded_int(values.get("limit"), 20, 1, 100)
        offset = bounded_int(values.get("offset"), 0, 0, 100_000)
        category = bounded_text(values.get("category"), 120)
        q = bounded_text(values.get("q"), 200)
        min_price = bounded_text(values.get("minPrice"), 20)
        max_price = bounded_text(values.get("maxPrice"), 20)
        in_stock = boolean(values.get("inStock"))
        featured = boolean(values.get("featured"))
    except Declined:
        return None
    return await _page(
        request,
        request.app.state.catalog_deps,
        limit=limit,
        offset=offset,
        category=category,
        q=q,
        sort=sort,
        min_price=min_price,
        max_price=max_price,
        in_stock=in_stock,
        featured=featured,
    )


async def _page(
    request: Request,
    catalog: CatalogDeps,
    *,
    limit: int,
    offset: int,
    category: str | None,
    q: str | None,
    sort: ProductSort,
    min_price: str | None,
    max_price: str | None,
    in_stock: bool | None,
    featured: bool | None,
) -> Response:
    currency = catalog.default_currency
    query = service.ProductQuery(
        limit=limit,
        offset=offset,
        category=category,
        q=q.strip() if q and q.strip() else None,
        min_price=_minor(min_price, currency, "minPrice"),
        max_price=_minor(max_price, currency, "maxPrice"),
        in_stock=in_stock,
        featured=featured,
        sort=sort.value,
    )
    page = await catalog.pages.page(query)
    return Response(
        page.body,
        media_type="application/json",
        headers=total_count_headers(request, total=page.total, limit=limit, offset=offset),
    )


async def list_products(
    request: Request,
    catalog: Catalog,
    category: Annotated[
        str | None, Query(max_length=120, description="A category slug; includes sub-categories")
    ] = None,
    q: Annotated[str | None, Query(max_length=200, description="Full-text search")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    sort: ProductSort = ProductSort.NEWEST,
    minPrice: Annotated[str | None, Query(max_length=20)] = None,
    maxPrice: Annotated[str | None, Query(max_length=20)] = None,
    inStock: bool | None = None,
    featured: bool | None = None,
) -> Response:
    """Products, paged; the total is in ``X-Total-Count`` and pages in ``Link``."""
    return await _page(
        request,
        catalog,
        limit=limit,
        offset=offset,
        category=category,
        q=q,
        sort=sort,
        min_price=minPrice,
        max_price=maxPrice,
        in_stock=inStock,
        featured=featured,
    )


router.add_api_route(
    "/products",
    list_products,
    methods=["GET"],
    response_model=list[ProductSummary],
    tags=["Products"],
    summary="List, filter and search products",
    dependencies=[Depends(public)],
    responses=_invalid,
    route_class_override=direct_route(_list_products_direct),
)


async def _detail(catalog: Catalog, product_id: uuid.UUID) -> ProductDetail:
    async with catalog.read_session() as session:
        product = await service.active_product(session, product_id)
        variants = await service.variants_of(session, product_id)
        category = await session.get(Category, product.category_id) if product.category_id else None
        images = list(
            (
                await session.execute(
                    select(ProductImage)
                    .where(ProductImage.product_id == product_id)
                    .order_by(ProductImage.position)
                )
            ).scalars()
        )
        path: list[str] = []
        if category is not None:
            path = category.path.strip("/").split("/")
    base = presenters.summary(
        product,
        category.slug if category else None,
        images[0] if images else None,
        catalog.media_prefix,
    )
    return ProductDetail(
        **base.model_dump(),
        description=product.description,
        options=product.options,
        variants=[presenters.variant_out(variant, product.currency) for variant in variants],
        images=[presenters.image_out(image, catalog.media_prefix) for image in images],
        categoryPath=path,
        createdAt=product.created_at,
        updatedAt=product.updated_at,
    )


@router.get(
    "/products/{productId}",
    response_model=ProductDetail,
    tags=["Products"],
    summary="One product with its description, variants, stock and images",
    dependencies=[Depends(public)],
    responses={**_invalid, **_missing},
)
async def get_product(productId: uuid.UUID, catalog: Catalog) -> ProductDetail:
    """A product; archived ones are not found."""
    detail = await _detail(catalog, productId)
    catalog.views.record(productId)
    return detail


@router.post(
    "/products",
    status_code=201,
    response_model=ProductCreated,
    tags=["Products"],
    summary="Create a product (Admin only)",
    responses={**_invalid, **_admin, **_conflict},
)
async def create_product(
    body: ProductCreate, catalog: Catalog, admin: AdminPrincipal
) -> ProductCreated:
    """The seed's ``{name, description, price, stock}``, or a product with options and variants."""
    if body.variants and (body.price is not None or body.stock is not None or body.sku is not None):
        raise InvalidInput("Give either price/stock/sku or variants, not both.")
    if body.variants:
        specs = [
            service.VariantSpec(
                price=v.price,
                stock=v.stock,
                sku=v.sku,
                title=v.title,
                option_values=dict(v.optionValues),
            )
            for v in body.variants
        ]
    elif body.price is not None:
        specs = [service.VariantSpec(price=body.price, stock=body.stock or 0, sku=body.sku)]
    else:
        raise InvalidInput("A product needs a price (or variants with prices).", field="price")
    async with catalog.uow() as uow:
        product = await service.create_product(
            uow,
            catalog.search,
            name=body.name,
            description=body.description,
            currency=body.currency or catalog.default_currency,
            category=body.category,
            slug=body.slug,
            featured=body.featured,
            options=[option.model_dump() for option in body.options],
            variants=specs,
            actor_id=admin.user_id,
        )
        await uow.commit()
    return ProductCreated(productId=product.id, message="Product created")


@router.patch(
    "/products/{productId}",
    response_model=ProductDetail,
    tags=["Products"],
    summary="Change a product (Admin only)",
    responses={**_invalid, **_admin, **_missing},
)
async def update_product(
    productId: uuid.UUID, body: ProductUpdate, catalog: Catalog, _admin: AdminPrincipal
) -> ProductDetail:
    """Only the fields sent change; ``price`` sets every variant's price."""
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    async with catalog.uow() as uow:
        await service.update_product(uow, catalog.search, productId, changes)
        await uow.commit()
    return await _detail(catalog, productId)


@router.delete(
    "/products/{productId}",
    status_code=204,
    tags=["Products"],
    summary="Remove a product from the shop (Admin only)",
    responses={**_admin, **_missing},
)
async def delete_product(
    productId: uuid.UUID, catalog: Catalog, _admin: AdminPrincipal
) -> Response:
    """Archive the product: it leaves listings and search; past orders keep their lines."""
    async with catalog.uow() as uow:
        await service.archive_product(uow, catalog.search, productId)
        await uow.commit()
    return Response(status_code=204)


@router.patch(
    "/products/{productId}/variants/{variantId}",
    response_model=VariantOut,
    tags=["Products"],
    summary="Change a variant's price or title (Admin only)",
    responses={**_invalid, **_admin, **_missing},
)
async def update_variant(
    productId: uuid.UUID,
    variantId: uuid.UUID,
    body: VariantUpdate,
    catalog: Catalog,
    _admin: AdminPrincipal,
) -> VariantOut:
    """A price change publishes ``price.changed``."""
    async with catalog.uow() as uow:
        variant = await service.update_variant(
            uow, productId, variantId, price=body.price, title=body.title
        )
        product = await service.active_product(uow.session, productId)
        await uow.commit()
    return presenters.variant_out(variant, product.currency)


@router.get(
    "/categories",
    response_model=list[CategoryOut],
    tags=["Categories"],
    summary="The category tree",
    dependencies=[Depends(public)],
)
async def list_categories(catalog: Catalog) -> list[CategoryOut]:
    """Every category, nested under its parent."""
    async with catalog.read_session() as session:
        return presenters.category_tree(await service.all_categories(session))


@router.post(
    "/categories",
    status_code=201,
    response_model=CategoryOut,
    tags=["Categories"],
    summary="Create a category (Admin only)",
    responses={**_invalid, **_admin, **_conflict},
)
async def create_category(
    body: CategoryIn, catalog: Catalog, _admin: AdminPrincipal
) -> CategoryOut:
    """A category, at the top or under ``parent``."""
    async with catalog.uow() as uow:
        category = await service.create_category(
            uow,
            name=body.name,
            slug=body.slug,
            description=body.description,
            parent=body.parent,
            position=body.position,
        )
        await uow.commit()
    return CategoryOut(
        categoryId=category.id,
        slug=category.slug,
        name=category.name,
        description=category.description,
        parent=body.parent,
        position=category.position,
    )


@router.patch(
    "/categories/{slug}",
    response_model=CategoryOut,
    tags=["Categories"],
    summary="Rename or describe a category (Admin only)",
    responses={**_invalid, **_admin, **_missing},
)
async def update_category(
    slug: str, body: CategoryUpdate, catalog: Catalog, _admin: AdminPrincipal
) -> CategoryOut:
    """Only the fields sent change."""
    async with catalog.uow() as uow:
        category = await service.update_category(
            uow, slug, body.model_dump(exclude_unset=True, exclude_none=True)
        )
        parent = await uow.session.get(Category, category.parent_id) if category.parent_id else None
        await uow.commit()
    return CategoryOut(
        categoryId=category.id,
        slug=category.slug,
        name=category.name,
        description=category.description,
        parent=parent.slug if parent else None,
        position=category.position,
    )


@router.delete(
    "/categories/{slug}",
    status_code=204,
    tags=["Categories"],
    summary="Delete an empty category (Admin only)",
    responses={**_admin, **_missing, **_conflict},
)
async def delete_category(slug: str, catalog: Catalog, _admin: AdminPrincipal) -> Response:
    """Only a category without sub-categories or products can go."""
    async with catalog.uow() as uow:
        await service.delete_category(uow, slug)
        await uow.commit()
    return Response(status_code=204)


@router.post(
    "/inventory/variants/{variantId}/adjustments",
    response_model=VariantOut,
    tags=["Inventory"],
    summary="Add or remove stock with a reason (Admin only)",
    responses={**_invalid, **_admin, **_missing, **_conflict},
)
async def adjust_stock(
    variantId: uuid.UUID, body: StockAdjustment, catalog: Catalog, admin: AdminPrincipal
) -> VariantOut:
    """Recorded in the stock ledger with who, when and why."""
    if body.delta == 0:
        raise InvalidInput("An adjustment must change the stock.", field="delta")
    async with catalog.uow() as uow:
        variant = await inventory.adjust(uow, variantId, body.delta, body.reason, admin.user_id)
        product = await service.active_product(uow.session, variant.product_id)
        await uow.commit()
    return presenters.variant_out(variant, product.currency)


@router.get(
    "/inventory/variants/{variantId}/movements",
    response_model=list[StockMovementOut],
    tags=["Inventory"],
    summary="A variant's stock ledger, newest first (Admin only)",
    responses={**_admin, **_missing},
)
async def stock_movements(
    variantId: uuid.UUID,
    catalog: Catalog,
    _admin: AdminPrincipal,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[StockMovementOut]:
    """Every change of on-hand or reserved stock."""
    async with catalog.read_session() as session:
        if await session.get(Variant, variantId) is None:
            raise errors.VariantNotFound()
        rows = (
            await session.execute(
                select(StockMovement)
                .where(StockMovement.variant_id == variantId)
                .order_by(StockMovement.created_at.desc(), StockMovement.id)
                .limit(limit)
                .offset(offset)
            )
        ).scalars()
        return [
            StockMovementOut(
                movementId=m.id,
                variantId=m.variant_id,
                kind=m.kind,
                onHandDelta=m.on_hand_delta,
                reservedDelta=m.reserved_delta,
                onHandAfter=m.on_hand_after,
                reservedAfter=m.reserved_after,
                reason=m.reason,
                actorId=m.actor_id,
                reservationId=m.reservation_id,
                createdAt=m.created_at,
            )
            for m in rows
        ]


def _reservation_out(
    outcome: inventory.ReservationOutcome, reference: str, default_currency: str
) -> ReservationOut:
    if outcome.reservation is None:
        rejected = outcome.rejected
        return ReservationOut(
            reservationId=None,
            reference=reference,
            status="rejected",
            currency=None,
            lines=[],
            expiresAt=None,
            reason=rejected.reason if rejected else None,
            problems=[
                RejectedLineOut(
                    productId=line.product_id,
                    variantId=line.variant_id,
                    requested=line.requested,
                    available=line.available,
                )
                for line in (rejected.lines if rejected else [])
            ],
        )
    currency = outcome.currency or default_currency
    return ReservationOut(
        reservationId=outcome.reservation.id,
        reference=reference,
        status=outcome.reservation.status,
        currency=outcome.currency,
        lines=[
            ReservationLineOut(
                productId=variant.product_id,
                variantId=variant.id,
                sku=variant.sku,
                name=outcome.names[variant.id][0],
                categoryId=outcome.names[variant.id][1],
                quantity=quantity,
                unitPrice=presenters.price_text(price, currency),
                unitPriceAmount=price,
            )
            for variant, quantity, price in outcome.lines
        ],
        expiresAt=outcome.reservation.expires_at,
    )


def _line_requests(lines: list[ReservationLineIn]) -> list[inventory.LineRequest]:
    requests = [
        inventory.LineRequest(
            quantity=line.quantity, product_id=line.productId, variant_id=line.variantId
        )
        for line in lines
    ]
    if any(line.product_id is None and line.variant_id is None for line in requests):
        raise InvalidInput("Each line names a productId or a variantId.")
    return requests


async def _reserve(catalog: CatalogDeps, body: ReservationIn) -> ReservationOut:
    requests = _line_requests(body.lines)
    async with catalog.transaction() as tx:
        outcome = await inventory.reserve(
            tx,
            body.reference,
            requests,
            timedelta(seconds=body.ttlSeconds),
            held_here=catalog.held_here,
        )
    return _reservation_out(outcome, body.reference, catalog.default_currency)


async def _reserve_direct(request: Request) -> Response | None:
    """A reservation from another service, sent as the orders saga sends it, without
    FastAPI's per-request work; anything else goes to :func:`reserve`."""
    if not is_internal_caller(request):
        return None
    body = await body_as(ReservationIn, request)
    if body is None:
        return None
    return model_response(await _reserve(request.app.state.catalog_deps, body))


async def reserve(body: ReservationIn, catalog: Catalog) -> ReservationOut:
    return await _reserve(catalog, body)


router.add_api_route(
    "/internal/reservations",
    reserve,
    methods=["POST"],
    response_model=ReservationOut,
    include_in_schema=False,
    dependencies=[Depends(internal_only)],
    route_class_override=direct_route(_reserve_direct),
)


@router.post(
    "/internal/reservations/{reference}/release",
    status_code=204,
    include_in_schema=False,
    dependencies=[Depends(internal_only)],
)
async def release(reference: str, catalog: Catalog) -> Response:
    async with catalog.transaction() as tx:
        await inventory.release(tx, reference)
        await tx.commit()
    return Response(status_code=204)


async def _commit(catalog: CatalogDeps, reference: str) -> Response:
    async with catalog.transaction() as tx:
        await inventory.commit(tx, reference, held_here=catalog.held_here)
    return Response(status_code=204)


async def _commit_direct(request: Request) -> Response | None:
    """The sale of a reservation without FastAPI's per-request work: the route reads
    nothing but its path, which the router has matched already."""
    if not is_internal_caller(request):
        return None
    return await _commit(request.app.state.catalog_deps, request.path_params["reference"])


async def commit(reference: str, catalog: Catalog) -> Response:
    return await _commit(catalog, reference)


router.add_api_route(
    "/internal/reservations/{reference}/commit",
    commit,
    methods=["POST"],
    status_code=204,
    include_in_schema=False,
    dependencies=[Depends(internal_only)],
    route_class_override=direct_route(_commit_direct),
)


@router.post(
    "/internal/quotes",
    response_model=QuoteOut,
    include_in_schema=False,
    dependencies=[Depends(internal_only)],
)
async def quote(body: QuoteIn, catalog: Catalog) -> QuoteOut:
    """Today's prices of some lines, holding nothing: what an order is priced at."""
    requests = _line_requests(body.lines)
    async with catalog.database.reads() as sql:
        lines, problems = await inventory.quote(sql, requests)
    return QuoteOut(
        lines=[
            QuoteLineOut(
                productId=line.product_id,
                variantId=line.variant_id,
                sku=line.sku,
                name=line.name,
                categoryId=line.category_id,
                quantity=line.quantity,
                unitPriceAmount=line.unit_price_amount,
                currency=line.currency,
                available=line.available,
            )
            for line in lines
        ],
        unknown=[
            found
            for problem in problems
            if (found := problem.variant_id or problem.product_id) is not None
        ],
    )


@router.post(
    "/internal/reservations/{reference}/call-off",
    response_model=CallOffOut,
    include_in_schema=False,
    dependencies=[Depends(internal_only)],
)
async def call_off(reference: str, catalog: Catalog, reason: str = "order_cancelled") -> CallOffOut:
    """Undo what was done for an order, whatever it was: release, restock, or nothing."""
    if len(reference) > 100:
        raise InvalidInput("A reference is at most 100 characters.")
    async with catalog.transaction() as tx:
        status = await inventory.call_off(tx, reference, reason=reason[:100])
        await tx.commit()
    return CallOffOut(reference=reference, status=status)
