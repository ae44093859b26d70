import { cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { ApiError } from "../api/client";
import { formatMoney, ProblemMessage } from "./ui";

afterEach(cleanup);

describe("ProblemMessage", () => {
  it("shows the title, the detail, each field's error and the request id", () => {
    const error = new ApiError({
      type: "about:blank", title: "Invalid request", status: 400, detail: "Check the fields.",
      requestId: "req-42", errors: [{ loc: ["body", "price"], msg: "must be positive" }, { field: "name", message: "is required" }],
    });
    render(<ProblemMessage error={error} title="The product was not saved" />);
    const alert = screen.getByRole("alert");
    expect(alert.textContent).toContain("The product was not saved");
    expect(alert.textContent).toContain("Invalid request");
    expect(alert.textContent).toContain("Check the fields.");
    expect(screen.getByText("price: must be positive")).toBeTruthy();
    expect(screen.getByText("name: is required")).toBeTruthy();
    expect(alert.textContent).toContain("req-42");
  });

  it("shows nothing without an error", () => {
    const { container } = render(<ProblemMessage error={null} />);
    expect(container.innerHTML).toBe("");
  });
});

describe("formatMoney", () => {
  it("formats decimal strings in their currency", () => {
    expect(formatMoney("1234.5", "USD")).toMatch(/1,234\.50/);
    expect(formatMoney("not money", "USD")).toBe("not money");
  });
});
