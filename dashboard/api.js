// Calls to the gateway's stats APIs with the pasted token (Authorization: Bearer).
// The token lives in sessionStorage: gone when the tab closes, never in a URL or cookie.

const TOKEN_KEY = 'tollgate.dashboard.token';

export function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage disabled: the token lasts until reload */ }
}

/** An HTTP error from the API: status, and the message of its OpenAI-shaped error body. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * GET `path` (e.g. '/api/v1/stats/models') with `params` (undefined/'' values left out);
 * resolves the parsed JSON, rejects with ApiError (status 0 for a network failure).
 */
export async function getJson(path, params = {}) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') qs.set(k, String(v));
  }
  const url = qs.toString() ? `${path}?${qs}` : path;
  let res;
  try {
    res = await fetch(url, { headers: { Authorization: `Bearer ${getToken()}`, Accept: 'application/json' } });
  } catch (e) {
    throw new ApiError(0, `the gateway did not answer (${e.message})`);
  }
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const msg = body && body.error && typeof body.error.message === 'string' ? body.error.message : res.statusText;
    throw new ApiError(res.status, msg);
  }
  return body;
}
