// The admin API client: JSON reads, and token-guarded mutations (the token is asked for once per tab).

import { askToken } from "./dialogs.js";

const TOKEN_KEY = "strangler.admin-token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

async function problemDetail(response) {
  try {
    const body = await response.json();
    return body.detail || body.title || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

/** GET a JSON document; a non-2xx answer raises ApiError with the problem's detail. */
export async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!response.ok) throw new ApiError(response.status, await problemDetail(response));
  return response.json();
}

/** Like getJSON, but a 404 (an endpoint or an item that is not there) answers null instead of raising. */
export async function getOptional(path) {
  try {
    return await getJSON(path);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * POST a JSON body with the admin token. Without a token, or when the gateway answers 401, the token dialog asks
 * for one (and the request is retried with it); cancelling the dialog raises ApiError(401).
 */
export async function post(path, body) {
  let token = storedToken();
  let problem = "";
  for (;;) {
    if (!token) {
      token = await askToken(problem);
      if (!token) throw new ApiError(401, "no admin token given");
      sessionStorage.setItem(TOKEN_KEY, token);
    }
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify(body || {}),
    });
    if (response.status === 401) {
      forgetToken();
      token = "";
      problem = "The gateway refused that token. Enter the current one.";
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await problemDetail(response));
    return response.json();
  }
}
