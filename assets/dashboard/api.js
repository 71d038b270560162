// The dashboard's only way to the server: the admin API under /api/v1, with the session cookie the
// browser keeps after POST /api/v1/login. Every request says it sends and reads JSON (the API answers
// 406 to a client that cannot read JSON and 415 to a body that is not JSON), and carries the header
// X-Requested-With, which a page on another origin cannot send without the server's consent: with the
// browser's Origin and Sec-Fetch-Site it is how the server knows a change comes from the dashboard.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onExpired = () => {};

/** Called with no argument whenever a request other than login answers 401. */
export function whenSessionExpires(f) {
  onExpired = f;
}

/** `api("GET", "/integrations")` → the parsed JSON body (or null for 204); throws ApiError. */
export async function api(method, path, body) {
  const init = {
    method,
    headers: { Accept: "application/json", "X-Requested-With": "clicktermd-dashboard" },
    credentials: "same-origin",
    cache: "no-store",
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  // A 503 "busy" (every password check in use at this moment) is worth a few quiet retries.
  for (let tries = 0; ; tries++) {
    try {
      res = await fetch("/api/v1" + path, init);
    } catch (e) {
      throw new ApiError(0, "network", "The server could not be reached. Check that clicktermd is running, then try again.");
    }
    const retryAfter = res.headers.get("Retry-After");
    if (res.status !== 503 || !retryAfter || tries >= 3) break;
    const wait = Number(retryAfter) || 1;
    await new Promise((r) => setTimeout(r, Math.min(Math.max(wait, 1), 5) * 1000));
  }
  if (res.status === 204) return null;
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (e) {
      data = null;
    }
  }
  if (!res.ok) {
    const message = (data && data.message) || `The server answered ${res.status} ${res.statusText}.`;
    const err = new ApiError(res.status, (data && data.code) || "http_" + res.status, message);
    if (res.status === 429) {
      const wait = res.headers.get("Retry-After");
      if (wait) err.message += ` Try again in ${wait} s.`;
    }
    if (res.status === 401 && path !== "/login") onExpired();
    throw err;
  }
  return data;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? "?" + s : "";
}
