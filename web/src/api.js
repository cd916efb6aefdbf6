// The Azure-compatible API as the page uses it: the bearer token, api-version, Azure's error
// body, and long-running operations (202 + Azure-AsyncOperation, polled until done).

export const API_VERSION = "2024-07-01";
const TOKEN_KEY = "lab-portal-token";

/** An error the API answered, with Azure's code and message (shown to the user as is). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
  /** The user name inside the token (a JWT), for the header; "" if it cannot be read. */
  user() {
    try {
      const part = (this.get() || "").split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part)).name || "";
    } catch {
      return "";
    }
  },
};

/** An access token for a lab user, from the lab's sign-in authority (OAuth's password grant,
 * the same authority `az login` uses); rejects with ApiError carrying the AADSTS text. */
export async function signInWithPassword(username, password) {
  const form = new URLSearchParams({
    grant_type: "password", client_id: "serial-console-lab-portal", username, password,
    scope: "https://management.azure.com/.default",
  });
  const response = await fetch("/adfs/oauth2/token", { method: "POST", body: form });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const description = (body.error_description || response.statusText).split("\r\n")[0];
    throw new ApiError(response.status, body.error || `HTTP${response.status}`, description);
  }
  return body.access_token;
}

function withVersion(path) {
  if (path.startsWith("/_portal/")) return path; // the portal's own routes take no version
  return path + (path.includes("?") ? "&" : "?") + "api-version=" + API_VERSION;
}

async function errorOf(response) {
  let code = `HTTP${response.status}`;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    const err = body.error || body; // ARM nests it; a few answers (SubscriptionNotFound) do not
    code = err.code || code;
    message = err.message || message;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

/** A call to the API; resolves to the parsed JSON body (or null), rejects with ApiError. */
export async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${token.get()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(withVersion(path), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await errorOf(response);
  if (response.status === 202) return { accepted: response };
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** A long-running action (power operations): waits until the operation has Succeeded. */
export async function longRunning(method, path, body) {
  const result = await call(method, path, body);
  const accepted = result && result.accepted;
  if (!accepted) return result;
  const statusUrl = accepted.headers.get("Azure-AsyncOperation");
  if (!statusUrl) return null;
  for (;;) {
    const wait = Number(accepted.headers.get("Retry-After") || "1");
    await new Promise((r) => setTimeout(r, Math.min(Math.max(wait, 0.5), 3) * 1000));
    const r = await fetch(new URL(statusUrl).pathname + new URL(statusUrl).search, {
      headers: { Authorization: `Bearer ${token.get()}` },
    });
    if (!r.ok) throw await errorOf(r);
    const status = await r.json();
    if (status.status === "Succeeded") return status;
    if (status.status === "Failed" || status.status === "Canceled") {
      const err = status.error || {};
      throw new ApiError(500, err.code || status.status, err.message || "the operation failed");
    }
  }
}

/** The power state of an instance view ("running", "stopped", ...), or "unknown". */
export function powerState(instanceView) {
  const statuses = (instanceView && instanceView.statuses) || [];
  const power = statuses.find((s) => (s.code || "").startsWith("PowerState/"));
  return power ? power.code.slice("PowerState/".length) : "unknown";
}

/** Parts of a VM's or a scale-set instance's resource id. */
export function parseId(id) {
  const m = id.match(
    /^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)\/providers\/Microsoft\.Compute\/(virtualMachines|virtualMachineScaleSets)\/([^/]+)(?:\/virtualMachines\/([^/]+))?$/i,
  );
  if (!m) return null;
  return {
    subscription: m[1],
    group: m[2],
    kind: m[5] === undefined ? "vm" : "instance",
    name: m[5] === undefined ? m[4] : `${m[4]}_${m[5]}`,
    scaleSet: m[5] === undefined ? null : m[4],
    instanceId: m[5] === undefined ? null : m[5],
  };
}
