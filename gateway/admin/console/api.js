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
  const response = await authorized(path, { headers: { Accept: "application/json" }, cache: "no-store" }, false);
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

let asking = null;

/** The token from the dialog; requests that need it at the same time share one dialog. */
function ask(problem) {
  if (!asking) asking = askToken(problem).finally(() => { asking = null; });
  return asking;
}

/**
 * fetch with the admin token when one is known (or first asked for, with `needed`). A 401 (a change; or any read
 * when the gateway has admin.read_token set) asks for the token with the dialog and sends the request again;
 * cancelling the dialog raises ApiError(401).
 */
async function authorized(path, init, needed) {
  let token = storedToken();
  let problem = "";
  for (;;) {
    if (!token && needed) {
      token = await ask(problem);
      if (!token) throw new ApiError(401, "no admin token given");
      sessionStorage.setItem(TOKEN_KEY, token);
    }
    const headers = { ...init.headers };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, { ...init, headers });
    if (response.status !== 401) return response;
    forgetToken();
    problem = token ? "The gateway refused that token. Enter the current one." : "";
    token = "";
    needed = true;
  }
}

/**
 * POST a JSON body with the admin token. Without a token, or when the gateway answers 401, the token dialog asks
 * for one (and the request is retried with it); cancelling the dialog raises ApiError(401).
 */
export async function post(path, body) {
  const init = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) };
  const response = await authorized(path, init, true);
  if (!response.ok) throw new ApiError(response.status, await problemDetail(response));
  return response.json();
}
