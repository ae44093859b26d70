// The platform's API shapes, as docs/openapi/*.json describe them. Money is a
// decimal string everywhere: it is shown, never computed with floats.

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  code?: string;
  instance?: string;
  requestId?: string;
  errors?: Array<{ loc?: Array<string | number>; msg?: string; field?: string; message?: string }>;
}

export type Role = "USER" | "ADMIN" | "MODERATOR";

export interface User {
  id: string;
  email: string;
  firstName: string;
  lastName: string;
  phoneNumber: string | null;
  roles: Role[];
  emailVerified: boolean;
  createdAt: string;
  updatedAt: string;
}

export interface Category {
  categoryId: string;
  slug: string;
  name: string;
  description: string;
  parent: string | null;
  position: number;
  children?: Category[];
}

export interface ProductSummary {
  productId: string;
  name: string;
  price: string;
  stock: number;
  currency: string;
  slug: string;
  category: string | null;
  imageUrl: string | null;
  featured: boolean;
}

export interface OptionSpec {
  name: string;
  values: string[];
}

export interface Variant {
  variantId: string;
  sku: string;
  title: string;
  optionValues: Record<string, string>;
  price: string;
  stock: number;
  onHand: number;
  reserved: number;
}

export interface ProductImage {
  imageId: string;
  alt: string;
  width: number;
  height: number;
  urls: Partial<Record<"thumb" | "medium" | "large" | "original", string>>;
}

export interface ProductDetail extends ProductSummary {
  description: string;
  options: OptionSpec[];
  variants: Variant[];
  images: ProductImage[];
  categoryPath: string[];
  createdAt: string;
  updatedAt: string;
}

export type ProductSort = "newest" | "oldest" | "price" | "-price" | "name" | "-name" | "relevance";

export interface ProductQuery {
  q?: string;
  category?: string;
  minPrice?: string;
  maxPrice?: string;
  inStock?: boolean;
  featured?: boolean;
  sort?: ProductSort;
  limit?: number;
  offset?: number;
}

export interface ProductCreate {
  name: string;
  description?: string;
  category?: string | null;
  price?: string | null;
  stock?: number | null;
  featured?: boolean;
  sku?: string | null;
}

export interface ProductUpdate {
  name?: string;
  description?: string;
  category?: string | null;
  price?: string;
  featured?: boolean;
}

export interface StockMovement {
  movementId: string;
  variantId: string;
  kind: string;
  onHandDelta: number;
  reservedDelta: number;
  onHandAfter: number;
  reservedAfter: number;
  reason: string;
  actorId: string | null;
  reservationId: string | null;
  createdAt: string;
}

export interface Delivery {
  id: string;
  transactional?: boolean;
  nextAttemptAt?: string | null;
  eventId: string;
  userId: string | null;
  channel: string;
  recipient: string;
  template: string;
  subject: string;
  status: string;
  attempts: number;
  lastError: string | null;
  createdAt: string;
  sentAt: string | null;
}

export const ORDER_STATUSES = [
  "PENDING",
  "CONFIRMED",
  "SHIPPED",
  "DELIVERED",
  "CANCELLED",
  "REFUNDED",
] as const;
export type OrderStatus = (typeof ORDER_STATUSES)[number];

export interface OrderItem {
  productId: string;
  variantId?: string;
  sku?: string;
  name: string;
  quantity: number;
  unitPrice: string;
  lineTotal: string;
}

export interface OrderSummary {
  orderId: string;
  userId: string;
  status: OrderStatus;
  totalAmount: string;
  currency: string;
  itemCount?: number;
  cancelReason?: string | null;
  createdAt?: string;
  updatedAt?: string;
}

export interface Order extends OrderSummary {
  items: OrderItem[];
  statusHistory: Array<{ status: OrderStatus; at: string; reason?: string | null }>;
  // A machine-readable code (card_declined, out_of_stock...) and, when there is
  // one, a sentence for people.
  cancelMessage?: string | null;
  amountRefunded?: string;
  shippingAddress?: string;
  trackingNumber?: string | null;
  carrier?: string | null;
}

export interface OrderPlaced {
  orderId: string;
  status: OrderStatus;
  totalAmount: string;
  currency?: string;
}

export interface OrderCreate {
  items: Array<{ productId: string; quantity: number }>;
  shippingAddress: string;
  paymentMethod: string;
}

export interface Page<T> {
  items: T[];
  total: number;
}

export interface SalesRow {
  period: string;
  currency: string;
  grossRevenue: string;
  refunded: string;
  netRevenue: string;
  orders: number;
  units: number;
  refunds: number;
  averageOrderValue: string;
}

export interface Report<Row> {
  from: string;
  to: string;
  granularity?: string;
  rows: Row[];
}

export interface TopProductRow {
  productId: string;
  name: string;
  categoryId: string | null;
  currency: string;
  units: number;
  revenue: string;
}

export interface FunnelStage {
  stage: string;
  count: number;
  conversionFromPrevious: number | null;
}

export interface NotificationPreferences {
  userId: string;
  email: string;
  phoneNumber: string | null;
  marketingEmail: boolean;
  sms: boolean;
  push: boolean;
  pushTokens: string[];
  updatedAt: string;
}
