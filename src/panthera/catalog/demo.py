"""A demo catalog: nested categories, a thousand plausible products, variants and pictures.

Everything is derived from the product's number, so the same count always gives the
same catalog, and a larger count the same products and then more: running the seed
again (with the same or a larger count) adds only what is missing. Products are made
through the catalog's own use cases (``service.create_product``, ``service.add_image``),
so stock ledgers, search documents and events are exactly what the API would write.

Each product gets one generated picture (a two-colour gradient, a shape and the
product's initials) that goes through ``images.process`` like an upload, so every
stored size exists. Pictures are small (320 px) and drawn and encoded in worker
threads while the database work runs, which keeps a thousand products under half a
minute on two cores.
"""

from __future__ import annotations

import asyncio
import colorsys
import contextlib
import io
import itertools
import logging
import math
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import func, select

from panthera.catalog import images, service
from panthera.catalog.deps import CatalogDeps
from panthera.catalog.models import Product, ProductImage
from panthera.kernel.db import UnitOfWork

log = logging.getLogger("panthera.catalog.demo")

PICTURE_SIDE = 320
# Demo pictures are flat colours: a lighter encoder effort loses nothing visible,
# and costs a third of the default's time.
PICTURE_EFFORT = 1
BATCH = 50
# Batches whose pictures are being made while the database writes an earlier one.
LOOKAHEAD = 2


@dataclass(frozen=True)
class Aisle:
    slug: str
    name: str
    nouns: tuple[str, ...]
    # Price range in minor units (cents).
    low: int
    high: int


@dataclass(frozen=True)
class Department:
    slug: str
    name: str
    description: str
    adjectives: tuple[str, ...]
    materials: tuple[str, ...]
    aisles: tuple[Aisle, ...]
    praise: tuple[str, ...]
    # "apparel": sizes (and sometimes colours); "colours": sometimes colours; "": none.
    options: str = ""
    shape: str = "circle"
    # How a description names the material: "in cotton", "with shea"...
    material_phrase: str = "in {material}"


COLOURS = (
    "Black",
    "White",
    "Navy",
    "Forest Green",
    "Burgundy",
    "Sand",
    "Slate Grey",
    "Mustard",
    "Sky Blue",
    "Terracotta",
)
SIZES = ("S", "M", "L", "XL")

DEPARTMENTS: tuple[Department, ...] = (
    Department(
        slug="clothing",
        name="Clothing",
        description="Everyday clothes made to last.",
        adjectives=(
            "Classic",
            "Relaxed",
            "Slim",
            "Heavyweight",
            "Lightweight",
            "Essential",
            "Vintage",
            "Organic",
            "Cropped",
            "Oversized",
        ),
        materials=("Cotton", "Linen", "Merino", "Denim", "Fleece", "Corduroy"),
        aisles=(
            Aisle("t-shirts", "T-Shirts", ("Tee", "Crew Tee", "Pocket Tee", "Henley"), 1200, 4500),
            Aisle(
                "sweaters", "Sweaters", ("Sweater", "Cardigan", "Hoodie", "Pullover"), 3500, 12000
            ),
            Aisle("jackets", "Jackets", ("Jacket", "Overshirt", "Parka", "Bomber"), 6000, 25000),
            Aisle("trousers", "Trousers", ("Chinos", "Joggers", "Trousers", "Shorts"), 3000, 9500),
        ),
        praise=(
            "Cut for an easy fit that keeps its shape wash after wash.",
            "Soft from the first wear and tough enough for every day.",
            "Finished with reinforced seams and a tag-free neck.",
            "Garment-dyed for a lived-in colour that ages well.",
        ),
        options="apparel",
        shape="shirt",
    ),
    Department(
        slug="home-kitchen",
        name="Home & Kitchen",
        description="Tools and pieces for cooking, eating and living.",
        adjectives=(
            "Everyday",
            "Nordic",
            "Rustic",
            "Compact",
            "Stackable",
            "Hand-Finished",
            "Modern",
            "Heritage",
            "Minimal",
            "Chef's",
        ),
        materials=("Stoneware", "Cast Iron", "Oak", "Steel", "Glass", "Bamboo"),
        aisles=(
            Aisle(
                "cookware", "Cookware", ("Skillet", "Saucepan", "Dutch Oven", "Wok"), 2500, 18000
            ),
            Aisle(
                "tableware", "Tableware", ("Plate Set", "Bowl", "Mug", "Serving Board"), 900, 6500
            ),
            Aisle("storage", "Storage", ("Canister", "Jar Set", "Bread Bin", "Basket"), 800, 5000),
            Aisle(
                "lighting",
                "Lighting",
                ("Table Lamp", "Pendant", "Lantern", "Desk Lamp"),
                2500,
                16000,
            ),
        ),
        praise=(
            "Made to be used daily and passed on.",
            "Dishwasher safe and easy to care for.",
            "Designed in small batches with an eye for proportion.",
            "Pairs with the rest of the range for a calm, matching table.",
        ),
        options="colours",
        shape="circle",
    ),
    Department(
        slug="electronics",
        name="Electronics",
        description="Sound, power and small smart things for the home.",
        adjectives=(
            "Wireless",
            "Portable",
            "Compact",
            "Pro",
            "Mini",
            "Smart",
            "Fast",
            "Quiet",
            "Rugged",
            "Slim",
        ),
        materials=("Aluminium", "Matte Black", "Fabric", "Walnut", "Graphite", "Glass"),
        aisles=(
            Aisle("audio", "Audio", ("Speaker", "Headphones", "Earbuds", "Soundbar"), 2900, 29900),
            Aisle(
                "chargers-cables",
                "Chargers & Cables",
                ("USB-C Charger", "Power Bank", "Cable", "Charging Dock"),
                900,
                7900,
            ),
            Aisle(
                "smart-home",
                "Smart Home",
                ("Smart Plug", "Thermostat", "Doorbell", "Sensor Kit"),
                1900,
                24900,
            ),
        ),
        praise=(
            "Sets up in minutes from your phone.",
            "Two-year warranty and free firmware updates.",
            "Tuned for long battery life and low standby power.",
            "Works with the voice assistants you already use.",
        ),
        shape="square",
        material_phrase="with a {material} finish",
    ),
    Department(
        slug="outdoors",
        name="Outdoors",
        description="Gear for trails, campsites and the road.",
        adjectives=(
            "Trail",
            "Alpine",
            "Packable",
            "Waterproof",
            "Ultralight",
            "Expedition",
            "Weekend",
            "All-Season",
            "Insulated",
            "Rugged",
        ),
        materials=("Nylon", "Ripstop", "Titanium", "Canvas", "Down", "Aluminium"),
        aisles=(
            Aisle(
                "camping", "Camping", ("Tent", "Sleeping Bag", "Camp Stove", "Hammock"), 2500, 45000
            ),
            Aisle(
                "hiking",
                "Hiking",
                ("Backpack", "Trekking Poles", "Water Bottle", "Daypack"),
                1500,
                22000,
            ),
            Aisle(
                "cycling", "Cycling", ("Bike Light", "Saddle Bag", "Helmet", "Pump"), 1500, 15000
            ),
        ),
        praise=(
            "Field-tested through wet springs and cold autumns.",
            "Packs small and weighs next to nothing.",
            "Backed by free repairs for the life of the product.",
            "Made with recycled fabrics and PFC-free coatings.",
        ),
        options="colours",
        shape="triangle",
    ),
    Department(
        slug="beauty-care",
        name="Beauty & Care",
        description="Gentle care for skin and hair.",
        adjectives=(
            "Gentle",
            "Hydrating",
            "Soothing",
            "Daily",
            "Rich",
            "Fragrance-Free",
            "Botanical",
            "Revitalising",
            "Calming",
            "Pure",
        ),
        materials=("Aloe", "Oat", "Rosehip", "Shea", "Green Tea", "Lavender"),
        aisles=(
            Aisle("skincare", "Skincare", ("Face Cream", "Serum", "Cleanser", "Toner"), 900, 6500),
            Aisle(
                "hair-care",
                "Hair Care",
                ("Shampoo", "Conditioner", "Hair Oil", "Hair Mask"),
                700,
                4500,
            ),
            Aisle(
                "bath", "Bath", ("Body Wash", "Bath Salts", "Soap Bar", "Body Lotion"), 500, 3500
            ),
        ),
        praise=(
            "Dermatologically tested and suitable for sensitive skin.",
            "Vegan, cruelty-free and in a recyclable bottle.",
            "A light texture that absorbs quickly.",
            "Made in small batches with plant-based ingredients.",
        ),
        shape="drop",
        material_phrase="with {material}",
    ),
    Department(
        slug="office",
        name="Office",
        description="Paper, pens and a tidy desk.",
        adjectives=(
            "Dotted",
            "Classic",
            "Refillable",
            "Pocket",
            "Executive",
            "Minimal",
            "Weekly",
            "Archival",
            "Ergonomic",
            "Modular",
        ),
        materials=("Recycled Paper", "Leather", "Brass", "Felt", "Walnut", "Cork"),
        aisles=(
            Aisle(
                "notebooks",
                "Notebooks",
                ("Notebook", "Journal", "Planner", "Sketchbook"),
                600,
                3500,
            ),
            Aisle(
                "pens",
                "Pens",
                ("Fountain Pen", "Gel Pen Set", "Pencil Set", "Rollerball"),
                400,
                9000,
            ),
            Aisle(
                "desk-accessories",
                "Desk Accessories",
                ("Desk Organiser", "Monitor Stand", "Desk Mat", "Pen Tray"),
                1200,
                8900,
            ),
            Aisle(
                "bags", "Bags", ("Laptop Sleeve", "Tote", "Messenger Bag", "Backpack"), 2500, 14000
            ),
        ),
        praise=(
            "Lies flat and takes ink without bleeding through.",
            "Built to sit on a desk for years and look better for it.",
            "Thoughtful details for people who make lists.",
            "A small upgrade that makes every working day nicer.",
        ),
        options="colours",
        shape="square",
    ),
)


@dataclass(frozen=True)
class VariantPlan:
    sku: str
    price: str
    stock: int
    option_values: dict[str, str]


@dataclass(frozen=True)
class ProductPlan:
    number: int
    slug: str
    name: str
    description: str
    department: str
    category: str
    featured: bool
    options: list[dict[str, Any]]
    variants: list[VariantPlan]
    # Picture colours (RGB) and shape.
    colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    shape: str


@dataclass
class SeedReport:
    categories_created: int = 0
    products_created: int = 0
    products_skipped: int = 0
    images_created: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def _price_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _shop_price(rng: random.Random, low: int, high: int) -> int:
    """A price a shop would use: whole units ending in .99, .49 or .00."""
    units = rng.randint(max(1, low // 100), max(1, high // 100))
    return units * 100 + rng.choice((99, 99, 49, 0)) - (100 if units > 1 else 0)


def _colour_pair(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    hue = rng.random()
    first = colorsys.hls_to_rgb(hue, 0.55, 0.55)
    second = colorsys.hls_to_rgb((hue + rng.uniform(0.08, 0.25)) % 1.0, 0.35, 0.6)
    return (
        (round(first[0] * 255), round(first[1] * 255), round(first[2] * 255)),
        (round(second[0] * 255), round(second[1] * 255), round(second[2] * 255)),
    )


def _code(value: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", value.upper())[:6]


def _aisles() -> list[tuple[Department, Aisle]]:
    return [(department, aisle) for department in DEPARTMENTS for aisle in department.aisles]


@lru_cache(maxsize=64)
def _names_of(department: Department, aisle: Aisle) -> tuple[tuple[str, str, str], ...]:
    """Every (adjective, material, noun) of an aisle, in a fixed shuffled order."""
    names = list(itertools.product(department.adjectives, department.materials, aisle.nouns))
    random.Random(f"panthera-demo:{aisle.slug}").shuffle(names)
    return tuple(names)


def plans(count: int) -> Iterator[ProductPlan]:
    """The first ``count`` demo products; product ``n`` is the same whatever ``count`` is."""
    aisles = _aisles()
    used: set[str] = set()
    for number in range(1, count + 1):
        department, aisle = aisles[(number - 1) % len(aisles)]
        rank = (number - 1) // len(aisles)
        names = _names_of(department, aisle)
        adjective, material, noun = names[rank % len(names)]
        name = f"{adjective} {material} {noun}"
        if rank >= len(names):
            name += f" No. {rank // len(names) + 1}"
        slug = service.slugify(name)
        while slug in used:
            slug += "-x"
        used.add(slug)
        rng = random.Random(f"panthera-demo:{number}")
        base = _shop_price(rng, aisle.low, aisle.high)
        options: list[dict[str, Any]] = []
        combinations: list[dict[str, str]] = [{}]
        if department.options == "apparel":
            options.append({"name": "Size", "values": list(SIZES)})
            if rng.random() < 0.5:
                options.append({"name": "Color", "values": rng.sample(COLOURS, 2)})
        elif department.options == "colours" and rng.random() < 0.3:
            options.append({"name": "Color", "values": rng.sample(COLOURS, 3)})
        if options:
            combinations = [
                dict(zip([o["name"] for o in options], values, strict=True))
                for values in itertools.product(*(o["values"] for o in options))
            ]
        sold_out = rng.random() < 0.12
        variants = []
        for values in combinations:
            price = base + (200 if values.get("Size") == "XL" else 0)
            stock = 0 if sold_out or rng.random() < 0.1 else rng.randint(1, 120)
            sku = "-".join([f"DEMO-{number:05d}", *(_code(v) for v in values.values())])
            variants.append(VariantPlan(sku, _price_text(price), stock, values))
        description = " ".join(
            (
                f"{adjective} {noun.lower()}"
                f" {department.material_phrase.format(material=material.lower())},"
                f" from our {aisle.name.lower()} range.",
                rng.choice(department.praise),
                rng.choice(
                    (
                        "Ships in two working days.",
                        "Free returns within 30 days.",
                        "Gift wrapping available at checkout.",
                        "Limited run: when it is gone, it is gone.",
                    )
                ),
            )
        )
        yield ProductPlan(
            number=number,
            slug=slug,
            name=name,
            description=description,
            department=department.slug,
            category=aisle.slug,
            featured=rng.random() < 0.06,
            options=options,
            variants=variants,
            colours=_colour_pair(rng),
            shape=department.shape,
        )


# ------------------------------------------------------------------- pictures


def _initials(name: str) -> str:
    words = [word for word in re.split(r"[\s-]+", name) if word[:1].isalpha()]
    if not words:
        return "P"
    return (words[0][0] + (words[-1][0] if len(words) > 1 else "")).upper()


def picture(
    name: str,
    colours: tuple[tuple[int, int, int], tuple[int, int, int]],
    shape: str,
    side: int = PICTURE_SIDE,
) -> bytes:
    """A JPEG of a diagonal two-colour gradient, a light shape and the name's initials."""
    from PIL import Image, ImageChops, ImageDraw, ImageFont

    # A diagonal ramp: the mean of a vertical and a horizontal one.
    ramp = Image.linear_gradient("L").resize((side, side))
    mask = ImageChops.add(ramp, ramp.transpose(Image.Transpose.ROTATE_90), scale=2.0)
    image = Image.composite(
        Image.new("RGB", (side, side), colours[1]), Image.new("RGB", (side, side), colours[0]), mask
    )
    draw = ImageDraw.Draw(image)
    light = (250, 248, 244)
    m = side // 5
    if shape == "square":
        draw.rounded_rectangle((m, m, side - m, side - m), radius=side // 10, fill=light)
    elif shape == "triangle":
        draw.polygon([(side // 2, m - side // 20), (side - m, side - m), (m, side - m)], fill=light)
    elif shape == "drop":
        draw.ellipse((m, side // 3, side - m, side - m), fill=light)
        draw.polygon(
            [(side // 2, m - side // 20), (m + 4, side // 2), (side - m - 4, side // 2)], fill=light
        )
    elif shape == "shirt":
        draw.polygon(
            [
                (side * 0.32, side * 0.2),
                (side * 0.68, side * 0.2),
                (side * 0.88, side * 0.36),
                (side * 0.78, side * 0.46),
                (side * 0.7, side * 0.4),
                (side * 0.7, side * 0.82),
                (side * 0.3, side * 0.82),
                (side * 0.3, side * 0.4),
                (side * 0.22, side * 0.46),
                (side * 0.12, side * 0.36),
            ],
            fill=light,
        )
    else:
        draw.ellipse((m, m, side - m, side - m), fill=light)
    font = ImageFont.load_default(size=max(12, math.floor(side * 0.22)))
    draw.text((side / 2, side * 0.55), _initials(name), font=font, fill=colours[1], anchor="mm")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def render(
    plan: ProductPlan, product_id: uuid.UUID, image_id: uuid.UUID, max_bytes: int
) -> images.ProcessedImage:
    """Draw a product's picture and put it through the upload pipeline (in a worker)."""
    return images.process(
        picture(plan.name, plan.colours, plan.shape),
        product_id=product_id,
        image_id=image_id,
        max_bytes=max_bytes,
        effort=PICTURE_EFFORT,
    )


def _executor() -> Executor:
    return ThreadPoolExecutor(max(1, os.cpu_count() or 1), thread_name_prefix="demo-pictures")


# ------------------------------------------------------------------- seeding


async def seed_categories(deps: CatalogDeps) -> int:
    """The department and aisle tree; categories that exist already are kept."""
    created = 0
    async with deps.uow() as uow:
        for position, department in enumerate(DEPARTMENTS):
            if await service.category_by_slug(uow.session, department.slug) is None:
                await service.create_category(
                    uow,
                    name=department.name,
                    slug=department.slug,
                    description=department.description,
                    parent=None,
                    position=position,
                )
                created += 1
            for child_position, aisle in enumerate(department.aisles):
                if await service.category_by_slug(uow.session, aisle.slug) is None:
                    await service.create_category(
                        uow,
                        name=aisle.name,
                        slug=aisle.slug,
                        description=f"{aisle.name} in {department.name}.",
                        parent=department.slug,
                        position=child_position,
                    )
                    created += 1
        await uow.session.flush()
        await uow.commit()
    return created


async def _existing_slugs(deps: CatalogDeps, slugs: Sequence[str]) -> set[str]:
    async with deps.read_session() as session:
        rows = await session.execute(select(Product.slug).where(Product.slug.in_(slugs)))
        return {row[0] for row in rows}


async def _store_all(deps: CatalogDeps, rendered: Sequence[images.ProcessedImage]) -> None:
    gate = asyncio.Semaphore(8)

    async def put(key: str, data: bytes) -> None:
        async with gate:
            await deps.storage.put(key, data, images.CONTENT_TYPE)

    await asyncio.gather(
        *(put(key, data) for item in rendered for key, data in item.objects.items())
    )


@dataclass(frozen=True)
class _Job:
    plan: ProductPlan
    product_id: uuid.UUID
    image_id: uuid.UUID
    picture: asyncio.Future[images.ProcessedImage]


async def _create(
    uow: UnitOfWork, deps: CatalogDeps, job: _Job, picture: images.ProcessedImage
) -> None:
    plan = job.plan
    await service.create_product(
        uow,
        deps.search,
        name=plan.name,
        description=plan.description,
        currency=deps.default_currency,
        category=plan.category,
        slug=plan.slug,
        featured=plan.featured,
        options=plan.options,
        variants=[
            service.VariantSpec(
                price=v.price, stock=v.stock, sku=v.sku, option_values=dict(v.option_values)
            )
            for v in plan.variants
        ],
        actor_id=None,
        product_id=job.product_id,
    )
    await service.add_image(
        uow,
        job.product_id,
        image_id=job.image_id,
        keys=picture.keys,
        width=picture.width,
        height=picture.height,
        alt=plan.name,
        announce=False,
    )


async def seed(
    deps: CatalogDeps,
    *,
    products: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> SeedReport:
    """Create the demo catalog's missing categories, products and pictures.

    Products go in batches, one transaction each. Pictures are drawn and encoded by
    worker threads up to ``LOOKAHEAD`` batches ahead of the database, and a batch's
    files are written while its rows are, always before the rows are committed.
    """
    started = time.perf_counter()
    report = SeedReport()
    report.categories_created = await seed_categories(deps)
    all_plans = list(plans(products))
    batches = [all_plans[i : i + BATCH] for i in range(0, len(all_plans), BATCH)]
    loop = asyncio.get_running_loop()
    waited = writing = 0.0

    with _executor() as pool:

        async def prepare(batch: list[ProductPlan]) -> list[_Job]:
            existing = await _existing_slugs(deps, [plan.slug for plan in batch])
            report.products_skipped += len(existing)
            jobs = []
            for plan in batch:
                if plan.slug in existing:
                    continue
                product_id, image_id = uuid.uuid4(), uuid.uuid4()
                future = loop.run_in_executor(
                    pool, render, plan, product_id, image_id, deps.max_image_bytes
                )
                jobs.append(_Job(plan, product_id, image_id, future))
            return jobs

        queued = [await prepare(batch) for batch in batches[:LOOKAHEAD]]
        for index in range(len(batches)):
            if index + LOOKAHEAD < len(batches):
                queued.append(await prepare(batches[index + LOOKAHEAD]))
            jobs = queued[index]
            if not jobs:
                continue
            moment = time.perf_counter()
            pictures = await asyncio.gather(*(job.picture for job in jobs))
            waited += time.perf_counter() - moment
            moment = time.perf_counter()
            storing = asyncio.ensure_future(_store_all(deps, pictures))
            try:
                async with deps.uow() as uow:
                    for job, picture in zip(jobs, pictures, strict=True):
                        await _create(uow, deps, job, picture)
                    await storing
                    await uow.commit()
            except BaseException:
                storing.cancel()
                with contextlib.suppress(BaseException):
                    await storing
                await images.discard(deps.storage, (k for p in pictures for k in p.objects))
                raise
            writing += time.perf_counter() - moment
            report.products_created += len(jobs)
            report.images_created += len(jobs)
            if progress is not None:
                done = min(len(all_plans), (index + 1) * BATCH)
                progress(f"{done}/{len(all_plans)} products")
    report.seconds = time.perf_counter() - started
    report.timings = {"waiting_for_pictures": waited, "writing": writing}
    return report


async def counts(deps: CatalogDeps) -> dict[str, int]:
    """How many products and images there are (for reports and tests)."""
    async with deps.read_session() as session:
        products = await session.scalar(select(func.count()).select_from(Product))
        pictures = await session.scalar(select(func.count()).select_from(ProductImage))
    return {"products": int(products or 0), "images": int(pictures or 0)}
