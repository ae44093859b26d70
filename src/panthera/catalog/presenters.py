"""Turning catalog rows into API bodies."""

from __future__ import annotations

from panthera.catalog.models import Category, Product, ProductImage, Variant
from panthera.catalog.schemas import CategoryOut, ImageOut, ProductSummary, VariantOut
from panthera.kernel.money import Money


def price_text(amount: int, currency: str) -> str:
    return Money(amount, currency).format()


def image_out(image: ProductImage, media_prefix: str) -> ImageOut:
    return ImageOut(
        imageId=image.id,
        alt=image.alt,
        width=image.width,
        height=image.height,
        urls={size: f"{media_prefix}/{key}" for size, key in image.keys.items()},
    )


def summary(
    product: Product, category_slug: str | None, image: ProductImage | None, media_prefix: str
) -> ProductSummary:
    return ProductSummary(
        productId=product.id,
        name=product.name,
        price=price_text(product.price_amount, product.currency),
        stock=product.available,
        currency=product.currency,
        slug=product.slug,
        category=category_slug,
        imageUrl=f"{media_prefix}/{image.cover_key}" if image else None,
        featured=product.featured,
    )


def variant_out(variant: Variant, currency: str) -> VariantOut:
    return VariantOut(
        variantId=variant.id,
        sku=variant.sku,
        title=variant.title,
        optionValues=variant.option_values,
        price=price_text(variant.price_amount, currency),
        stock=variant.on_hand - variant.reserved,
        onHand=variant.on_hand,
        reserved=variant.reserved,
    )


def category_tree(categories: list[Category]) -> list[CategoryOut]:
    by_id = {category.id: category for category in categories}
    nodes = {
        category.id: CategoryOut(
            categoryId=category.id,
            slug=category.slug,
            name=category.name,
            description=category.description,
            parent=by_id[category.parent_id].slug if category.parent_id in by_id else None,
            position=category.position,
        )
        for category in categories
    }
    roots: list[CategoryOut] = []
    for category in sorted(categories, key=lambda c: (c.position, c.name)):
        node = nodes[category.id]
        if category.parent_id in nodes:
            nodes[category.parent_id].children.append(node)
        else:
            roots.append(node)
    return roots
