import { Suspense, useState, type FormEvent } from "react";
import { Link, NavLink, Outlet, useLocation, useNavigate } from "react-router";
import { itemCount } from "../cart/cart";
import { useCart, useIsStaff, useSession } from "../state";
import { Loading } from "./ui";

export function Layout() {
  const { session, state } = useSession();
  const { lines } = useCart();
  const staff = useIsStaff();
  const navigate = useNavigate();
  const location = useLocation();
  const [query, setQuery] = useState("");
  const count = itemCount(lines);

  const search = (event: FormEvent) => {
    event.preventDefault();
    const params = new URLSearchParams();
    if (query.trim()) params.set("q", query.trim());
    navigate(`/products${params.size ? `?${params}` : ""}`);
  };

  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="site-header">
        <div className="bar">
          <Link to="/" className="brand" aria-label="Panthera home">
            Panthera
          </Link>
          <form role="search" className="search" onSubmit={search}>
            <label htmlFor="site-search" className="visually-hidden">
              Search products
            </label>
            <input
              id="site-search"
              type="search"
              placeholder="Search products"
              value={query}
              onChange={(event) => setQuery(event.target.value)}
            />
            <button type="submit">Search</button>
          </form>
          <nav aria-label="Main" className="main-nav">
            <NavLink to="/products">Shop</NavLink>
            {staff && <NavLink to="/admin">Admin</NavLink>}
            {state.status === "signed-in" ? (
              <>
                <NavLink to="/orders">Orders</NavLink>
                <NavLink to="/account">Account</NavLink>
                <button type="button" className="link" onClick={() => void session.signOut().then(() => navigate("/"))}>
                  Sign out
                </button>
              </>
            ) : state.status === "anonymous" ? (
              <button
                type="button"
                className="link"
                onClick={() => void session.startSignIn(location.pathname + location.search)}
              >
                Sign in
              </button>
            ) : null}
            <NavLink to="/cart" className="cart-link">
              Cart <span className="badge">{count}</span>
              <span className="visually-hidden"> items</span>
            </NavLink>
          </nav>
        </div>
      </header>
      <main id="main">
        <Suspense fallback={<Loading />}>
          <Outlet />
        </Suspense>
      </main>
      <footer className="site-footer">
        <p>
          Panthera demo shop · <Link to="/signup">Create an account</Link> ·{" "}
          <a href="/docs">API documentation</a>
        </p>
      </footer>
    </>
  );
}
