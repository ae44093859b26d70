"""The catalog's errors."""

from panthera.kernel.errors import Conflict, InvalidInput, NotFound


class ProductNotFound(NotFound):
    code = "product_not_found"
    title = "Product not found"


class VariantNotFound(NotFound):
    code = "variant_not_found"
    title = "Variant not found"


class CategoryNotFound(NotFound):
    code = "category_not_found"
    title = "Category not found"


class UnknownCategory(InvalidInput):
    code = "unknown_category"
    title = "No such category"


class SlugTaken(Conflict):
    code = "slug_taken"
    title = "That slug is already used"


class SkuTaken(Conflict):
    code = "sku_taken"
    title = "That SKU is already used"


class CategoryInUse(Conflict):
    code = "category_in_use"
    title = "The category still has sub-categories or products"


class StockBelowReserved(Conflict):
    code = "stock_below_reserved"
    title = "On-hand stock cannot go below what is reserved"


class ReservationNotFound(NotFound):
    code = "reservation_not_found"
    title = "Reservation not found"


class ReservationClosed(Conflict):
    code = "reservation_closed"
    title = "The reservation was already released, committed or expired"


class InvalidImage(InvalidInput):
    code = "invalid_image"
    title = "The upload is not a supported image"


class ImageTooLarge(InvalidInput):
    status = 413
    code = "image_too_large"
    title = "The image is too large"


class ImageNotFound(NotFound):
    code = "image_not_found"
    title = "Image not found"


class MediaNotFound(NotFound):
    code = "media_not_found"
    title = "No such file"
