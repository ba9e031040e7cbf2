// Talking to the service: every REST call goes through api(), every event
// stream is opened by openEvents(), so authentication lives in one place.
//
// A bearer token (when the service asks for one) is kept in sessionStorage:
// REST calls send it as "Authorization: Bearer <token>".  EventSource cannot
// send headers, so a stream first trades the token for a short-lived ticket
// (POST /auth/ticket) and passes that in the URL.  Without a token nothing
// calls /auth/ticket.

import { syncClock } from "./format.js";

const TOKEN_KEY = "progress-token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Take a token handed over in the URL fragment (#token=...) and drop it from the URL. */
export function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return;
  setToken(token);
  history.replaceState(null, "", location.pathname + location.search);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** fetch() a path of this service; resolves to its JSON, rejects with an ApiError. */
export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = getToken();
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || `http-${response.status}`,
                       error.message || response.statusText);
  }
  syncClock(body);
  return body;
}

function keyPath(base, key) {
  return key ? `${base}/${encodeURIComponent(key)}` : base;
}

/** The REST path of a node (or namespace) with query parameters; null/undefined ones are left out. */
export function statusPath(key, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) query.set(name, String(value));
  }
  const qs = query.toString();
  return keyPath("/status", key) + (qs ? `?${qs}` : "");
}

/** The UI page of a key ("" is the top-level listing). */
export function uiPath(key) {
  return key ? keyPath("/ui", key) : "/";
}

/** An EventSource on the live feed of *key*, authenticated with a ticket when a token is set. */
export async function openEvents(key) {
  const path = keyPath("/events", key) + (key ? "" : "/");
  if (!getToken()) return new EventSource(path);
  const { ticket } = await api("/auth/ticket", { method: "POST" });
  return new EventSource(`${path}?ticket=${encodeURIComponent(ticket)}`);
}

const FEED_EVENTS = ["snapshot", "update", "removed"];

/**
 * Follow the live feed of *key*: calls handlers.snapshot / update / removed with
 * each event's data, handlers.state("connecting" | "live" | "reconnecting"),
 * and handlers.problem(message) when the feed refuses us.
 *
 * EventSource reconnects by itself after a dropped connection (a server
 * restart, say), and the fresh snapshot that starts every stream catches the
 * page up.  When it gives up instead (a refused request, a spent ticket), we
 * open a new one ourselves, with backoff.
 */
export function follow(key, handlers) {
  let delay = 1000;

  const retry = () => {
    handlers.state("reconnecting");
    setTimeout(open, delay);
    delay = Math.min(delay * 2, 30000);
  };

  async function open() {
    handlers.state("connecting");
    let source;
    try {
      source = await openEvents(key);
    } catch (err) {
      handlers.problem(`live feed: ${err.message}`);
      retry();
      return;
    }
    source.onopen = () => {
      delay = 1000;
      handlers.state("live");
    };
    for (const type of FEED_EVENTS) {
      source.addEventListener(type, (event) => {
        const data = JSON.parse(event.data);
        syncClock(data);
        handlers[type](data);
      });
    }
    // "error" is both the stream failing and an `event: error` the service sends.
    source.addEventListener("error", (event) => {
      if (event.data) {
        handlers.problem(`live feed: ${JSON.parse(event.data).message}`);
      } else if (source.readyState === EventSource.CLOSED) {
        retry();
      } else {
        handlers.state("reconnecting");
      }
    });
  }

  open();
}
