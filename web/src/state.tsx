import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";
import { Session, type SessionState } from "./auth/session";
import { addLine, CART_KEY, readCart, setQuantity, type CartLine } from "./cart/cart";

const SessionContext = createContext<Session | null>(null);

export function SessionProvider({ session, children }: { session: Session; children: ReactNode }) {
  return <SessionContext.Provider value={session}>{children}</SessionContext.Provider>;
}

export function useSession(): { session: Session; state: SessionState } {
  const session = useContext(SessionContext);
  if (!session) throw new Error("useSession outside SessionProvider");
  const state = useSyncExternalStore(session.subscribe, session.snapshot);
  return { session, state };
}

export function useIsStaff(): boolean {
  const { state } = useSession();
  return state.status === "signed-in" && state.user.roles.includes("ADMIN");
}

interface CartApi {
  lines: CartLine[];
  add: (line: CartLine) => void;
  update: (key: string, quantity: number) => void;
  clear: () => void;
}

const CartContext = createContext<CartApi | null>(null);

export function CartProvider({ children }: { children: ReactNode }) {
  const [lines, setLines] = useState<CartLine[]>(() => readCart());

  useEffect(() => {
    // Another tab changed the cart: show the same one here.
    const follow = (event: StorageEvent) => {
      if (event.key === CART_KEY) setLines(readCart());
    };
    window.addEventListener("storage", follow);
    return () => window.removeEventListener("storage", follow);
  }, []);

  const save = useCallback((change: (lines: CartLine[]) => CartLine[]) => {
    setLines((current) => {
      const next = change(current);
      localStorage.setItem(CART_KEY, JSON.stringify(next));
      return next;
    });
  }, []);

  const api = useMemo<CartApi>(
    () => ({
      lines,
      add: (line) => save((current) => addLine(current, line)),
      update: (key, quantity) => save((current) => setQuantity(current, key, quantity)),
      clear: () => save(() => []),
    }),
    [lines, save],
  );
  return <CartContext.Provider value={api}>{children}</CartContext.Provider>;
}

export function useCart(): CartApi {
  const cart = useContext(CartContext);
  if (!cart) throw new Error("useCart outside CartProvider");
  return cart;
}
