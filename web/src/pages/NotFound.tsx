import { Link } from "react-router";
import { PageTitle } from "../components/ui";

export function NotFound() {
  return (
    <div className="narrow">
      <PageTitle>Page not found</PageTitle>
      <p>
        There is nothing at this address. <Link to="/products">Browse the shop</Link> instead.
      </p>
    </div>
  );
}
