import { lazy } from "react";
import { NavLink, Route, Routes } from "react-router";
import { RequireSignIn } from "../components/RequireSignIn";
import { PageTitle } from "../components/ui";
import { useIsStaff } from "../state";
import { AdminCategories } from "./Categories";
import { AdminDeliveries } from "./Deliveries";
import { AdminOrders } from "./Orders";
import { AdminProductEdit } from "./ProductEdit";
import { AdminProducts } from "./Products";
import { AdminUsers } from "./Users";

// The charting library is big and only staff look at charts: its own chunk.
const Analytics = lazy(() => import("./Analytics"));

export default function Admin() {
  return (
    <RequireSignIn title="Admin">
      <StaffOnly />
    </RequireSignIn>
  );
}

function StaffOnly() {
  const staff = useIsStaff();
  if (!staff) {
    return (
      <div className="narrow">
        <PageTitle>Admin</PageTitle>
        <p>This part of the shop is for staff. Your account does not have the ADMIN role.</p>
      </div>
    );
  }
  return (
    <div className="admin">
      <nav aria-label="Admin" className="admin-nav">
        <NavLink to="/admin" end>Products</NavLink>
        <NavLink to="/admin/categories">Categories</NavLink>
        <NavLink to="/admin/orders">Orders</NavLink>
        <NavLink to="/admin/users">Users</NavLink>
        <NavLink to="/admin/notifications">Notifications</NavLink>
        <NavLink to="/admin/analytics">Analytics</NavLink>
      </nav>
      <div className="admin-body">
        <Routes>
          <Route index element={<AdminProducts />} />
          <Route path="products/new" element={<AdminProductEdit />} />
          <Route path="products/:productId" element={<AdminProductEdit />} />
          <Route path="categories" element={<AdminCategories />} />
          <Route path="orders" element={<AdminOrders />} />
          <Route path="users" element={<AdminUsers />} />
          <Route path="notifications" element={<AdminDeliveries />} />
          <Route path="analytics" element={<Analytics />} />
        </Routes>
      </div>
    </div>
  );
}
