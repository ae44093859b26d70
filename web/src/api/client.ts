// Every call the web app makes to the platform, in one place: when an endpoint
// changes, this file is the one to change.
import type {
  Category,
  Delivery,
  FunnelStage,
  NotificationPreferences,
  Order,
  OrderCreate,
  OrderPlaced,
  OrderStatus,
  OrderSummary,
  Page,
  Problem,
  ProductCreate,
  ProductDetail,
  ProductImage,
  ProductQuery,
  ProductSummary,
  ProductUpdate,
  Report,
  Role,
  SalesRow,
  StockMovement,
  TopProductRow,
  User,
} from "./types";

export class ApiError extends Error {
  readonly problem: Problem;

  constructor(problem: Problem) {
    super(problem.detail || problem.title);
    this.name = "ApiError";
    this.problem = problem;
  }

  get status(): number {
    return this.problem.status;
  }
}

/** Supplies the bearer token, and a fresh one when the platform says it expired. */
export interface TokenSource {
  accessToken(): Promise<string | null>;
  refreshed(): Promise<string | null>;
}

let tokens: TokenSource | null = null;

export function useTokens(source: TokenSource | null): void {
  tokens = source;
}

type Query = Record<string, string | number | boolean | undefined | null>;

export function queryString(query: Query): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === "" || value === false) continue;
    params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

interface RequestOptions {
  method?: string;
  query?: Query;
  json?: unknown;
  form?: Record<string, string>;
  body?: BodyInit;
  headers?: Record<string, string>;
  auth?: boolean;
  accept?: string;
}

export interface Answer<T> {
  data: T;
  headers: Headers;
}

async function toProblem(response: Response): Promise<Problem> {
  const type = response.headers.get("content-type") ?? "";
  if (type.includes("json")) {
    try {
      const body = (await response.json()) as Partial<Problem> & {
        error?: string;
        error_description?: string;
      };
      // The OAuth endpoints answer RFC 6749 errors; the rest RFC 9457 problems.
      return {
        type: body.type ?? "about:blank",
        title: body.title ?? body.error_description ?? body.error ?? response.statusText,
        status: body.status ?? response.status,
        detail: body.detail ?? body.error_description,
        code: body.code ?? body.error,
        errors: body.errors,
        requestId: body.requestId ?? response.headers.get("x-request-id") ?? undefined,
      };
    } catch {
      // fall through to the generic problem
    }
  }
  return {
    type: "about:blank",
    title: response.statusText || "Request failed",
    status: response.status,
    requestId: response.headers.get("x-request-id") ?? undefined,
  };
}

export async function request<T>(path: string, options: RequestOptions = {}): Promise<Answer<T>> {
  const headers: Record<string, string> = {
    Accept: options.accept ?? "application/json",
    ...options.headers,
  };
  let body: BodyInit | undefined = options.body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  } else if (options.form) {
    headers["Content-Type"] = "application/x-www-form-urlencoded";
    body = new URLSearchParams(options.form).toString();
  }
  const url = path + (options.query ? queryString(options.query) : "");
  const send = async (token: string | null): Promise<Response> => {
    const sent = { ...headers };
    if (token) sent.Authorization = `Bearer ${token}`;
    try {
      return await fetch(url, { method: options.method ?? "GET", headers: sent, body });
    } catch {
      throw new ApiError({
        type: "about:blank",
        title: "The shop cannot be reached",
        detail: "Check your connection and try again.",
        status: 0,
      });
    }
  };
  const useAuth = options.auth !== false && tokens !== null;
  let response = await send(useAuth ? await tokens!.accessToken() : null);
  if (response.status === 401 && useAuth) {
    const fresh = await tokens!.refreshed();
    if (fresh) response = await send(fresh);
  }
  if (!response.ok) throw new ApiError(await toProblem(response));
  if (response.status === 204) return { data: undefined as T, headers: response.headers };
  const type = response.headers.get("content-type") ?? "";
  const data = (type.includes("json") ? await response.json() : await response.text()) as T;
  return { data, headers: response.headers };
}

async function get<T>(path: string, query?: Query): Promise<T> {
  return (await request<T>(path, { query })).data;
}

async function page<T>(path: string, query: Query): Promise<Page<T>> {
  const answer = await request<T[]>(path, { query });
  const total = Number(answer.headers.get("x-total-count") ?? answer.data.length);
  return { items: answer.data, total };
}

export function newIdempotencyKey(): string {
  return crypto.randomUUID();
}

// --- OAuth 2.0 (the auth service) ------------------------------------------------

export interface OAuthTokens {
  access_token: string;
  refresh_token: string;
  expires_in: number;
}

export const oauth = {
  authorizeUrl: "/api/v1/auth/authorize",
  exchangeCode: (form: {
    code: string;
    client_id: string;
    redirect_uri: string;
    code_verifier: string;
  }) =>
    request<OAuthTokens>("/api/v1/auth/token", {
      method: "POST",
      form: { grant_type: "authorization_code", ...form },
      auth: false,
    }).then((a) => a.data),
  refresh: (form: { client_id: string; refresh_token: string }) =>
    request<OAuthTokens>("/api/v1/auth/token", {
      method: "POST",
      form: { grant_type: "refresh_token", ...form },
      auth: false,
    }).then((a) => a.data),
  logout: (refreshToken: string, accessToken: string | null) =>
    request<void>("/api/v1/auth/logout", {
      method: "POST",
      json: { refreshToken },
      auth: false,
      headers: accessToken ? { Authorization: `Bearer ${accessToken}` } : {},
    }),
};

// --- Users ------------------------------------------------------------------------

export const users = {
  register: (body: {
    email: string;
    password: string;
    firstName: string;
    lastName: string;
    phoneNumber?: string | null;
  }) =>
    request<User>("/api/v1/users/register", { method: "POST", json: body, auth: false }).then(
      (a) => a.data,
    ),
  me: () => get<User>("/api/v1/users/me"),
  updateProfile: (
    userId: string,
    body: { firstName?: string; lastName?: string; phoneNumber?: string | null },
  ) =>
    request<User>(`/api/v1/users/profiles/${userId}`, { method: "PUT", json: body }).then(
      (a) => a.data,
    ),
  changePassword: (currentPassword: string, newPassword: string) =>
    request<void>("/api/v1/auth/password", {
      method: "POST",
      json: { currentPassword, newPassword },
    }),
  requestPasswordReset: (email: string) =>
    request<{ message: string }>("/api/v1/users/password-reset", {
      method: "POST",
      json: { email },
      auth: false,
    }).then((a) => a.data),
  confirmPasswordReset: (token: string, newPassword: string) =>
    request<unknown>("/api/v1/users/password-reset/confirm", {
      method: "POST",
      json: { token, newPassword },
      auth: false,
    }),
  verifyEmail: (token: string) =>
    request<unknown>("/api/v1/users/verify-email", {
      method: "POST",
      json: { token },
      auth: false,
    }),
  resendVerification: () =>
    request<unknown>("/api/v1/users/verification-email", { method: "POST" }),
  list: (limit: number, offset: number) =>
    page<User>("/api/v1/users/profiles", { limit, offset }),
  setRoles: (userId: string, roles: Role[]) =>
    request<User>(`/api/v1/users/profiles/${userId}/roles`, {
      method: "PUT",
      json: { roles },
    }).then((a) => a.data),
};

// --- Catalog ----------------------------------------------------------------------

export const catalog = {
  categories: () => get<Category[]>("/api/v1/categories"),
  products: (query: ProductQuery) => page<ProductSummary>("/api/v1/products", { ...query }),
  product: (productId: string) => get<ProductDetail>(`/api/v1/products/${productId}`),
  createProduct: (body: ProductCreate) =>
    request<{ productId: string }>("/api/v1/products", { method: "POST", json: body }).then(
      (a) => a.data,
    ),
  updateProduct: (productId: string, body: ProductUpdate) =>
    request<ProductDetail>(`/api/v1/products/${productId}`, { method: "PATCH", json: body }).then(
      (a) => a.data,
    ),
  deleteProduct: (productId: string) =>
    request<void>(`/api/v1/products/${productId}`, { method: "DELETE" }),
  uploadImage: (productId: string, file: File, alt: string) => {
    const form = new FormData();
    form.append("file", file);
    if (alt) form.append("alt", alt);
    return request<ProductImage>(`/api/v1/products/${productId}/images`, {
      method: "POST",
      body: form,
    }).then((a) => a.data);
  },
  deleteImage: (productId: string, imageId: string) =>
    request<void>(`/api/v1/products/${productId}/images/${imageId}`, { method: "DELETE" }),
  updateVariant: (productId: string, variantId: string, body: { price?: string; title?: string }) =>
    request<unknown>(`/api/v1/products/${productId}/variants/${variantId}`, {
      method: "PATCH",
      json: body,
    }),
  createCategory: (body: { name: string; slug?: string; parent?: string | null; description?: string }) =>
    request<Category>("/api/v1/categories", { method: "POST", json: body }).then((a) => a.data),
  updateCategory: (slug: string, body: { name?: string; description?: string; position?: number }) =>
    request<Category>(`/api/v1/categories/${slug}`, { method: "PATCH", json: body }).then(
      (a) => a.data,
    ),
  deleteCategory: (slug: string) =>
    request<void>(`/api/v1/categories/${slug}`, { method: "DELETE" }),
  adjustStock: (variantId: string, delta: number, reason: string) =>
    request<unknown>(`/api/v1/inventory/variants/${variantId}/adjustments`, {
      method: "POST",
      json: { delta, reason },
    }),
  movements: (variantId: string, limit = 20, offset = 0) =>
    page<StockMovement>(`/api/v1/inventory/variants/${variantId}/movements`, { limit, offset }),
};

// --- Orders -----------------------------------------------------------------------

export const orders = {
  place: (body: OrderCreate, idempotencyKey: string) =>
    request<OrderPlaced>("/api/v1/orders", {
      method: "POST",
      json: body,
      headers: { "Idempotency-Key": idempotencyKey },
    }).then((a) => a.data),
  get: (orderId: string) => get<Order>(`/api/v1/orders/${orderId}`),
  mine: (userId: string, query: { status?: OrderStatus; limit: number; offset: number }) =>
    page<OrderSummary>(`/api/v1/orders/user/${userId}`, query),
  cancel: (orderId: string, message?: string) =>
    request<Order>(`/api/v1/orders/${orderId}/cancel`, {
      method: "POST",
      json: message ? { message } : {},
    }).then((a) => a.data),
  all: (query: { status?: OrderStatus; limit: number; offset: number }) =>
    page<OrderSummary>("/api/v1/orders", query),
  ship: (orderId: string, trackingNumber: string, carrier: string) =>
    request<Order>(`/api/v1/orders/${orderId}/ship`, {
      method: "POST",
      json: { trackingNumber, carrier },
    }).then((a) => a.data),
  deliver: (orderId: string) =>
    request<Order>(`/api/v1/orders/${orderId}/deliver`, { method: "POST" }).then((a) => a.data),
  refund: (orderId: string, reason: string, amount: string | undefined, idempotencyKey: string) =>
    request<Order>(`/api/v1/orders/${orderId}/refund`, {
      method: "POST",
      json: amount ? { amount, reason } : { reason },
      headers: { "Idempotency-Key": idempotencyKey },
    }).then((a) => a.data),
};

// --- Notifications and analytics ----------------------------------------------------

export const notifications = {
  deliveries: (limit: number, offset: number, status?: string) =>
    page<Delivery>("/api/v1/notifications/deliveries", { limit, offset, status }),
  resend: (deliveryId: string) =>
    request<Delivery>(`/api/v1/notifications/deliveries/${deliveryId}/resend`, {
      method: "POST",
    }).then((a) => a.data),
  preferences: (userId: string) =>
    get<NotificationPreferences>(`/api/v1/notifications/preferences/${userId}`),
  setPreferences: (
    userId: string,
    changes: Partial<Pick<NotificationPreferences, "marketingEmail" | "sms" | "push">>,
  ) =>
    request<NotificationPreferences>(`/api/v1/notifications/preferences/${userId}`, {
      method: "PUT",
      json: changes,
    }).then((a) => a.data),
};

export interface ReportRange {
  from: string;
  to: string;
}

export const analytics = {
  sales: (query: ReportRange & { granularity: string }) =>
    get<Report<SalesRow>>("/api/v1/analytics/sales", { ...query }),
  topProducts: (query: ReportRange & { limit: number }) =>
    get<Report<TopProductRow>>("/api/v1/analytics/top-products", { ...query }),
  funnel: (query: ReportRange) =>
    get<Report<FunnelStage>>("/api/v1/analytics/funnel", { ...query }),
  /** Any report as CSV, for a download. */
  csv: (report: "sales" | "top-products", query: Record<string, string | number>) =>
    request<string>(`/api/v1/analytics/${report}`, { query, accept: "text/csv" }).then(
      (a) => a.data,
    ),
};
