// The page: which key it shows (from the URL), the header (breadcrumbs, feed
// state, token), and the view that follows the key's live feed.

import { follow, getToken, setToken, takeTokenFromFragment, uiPath } from "./api.js";
import { ListingView } from "./listing.js";
import { el } from "./row.js";
import { TreeView } from "./tree.js";

const DEFAULT_LIMIT = 50;   // children (or listed trees) per page; ?limit=N overrides
const MAX_LIMIT = 10000;    // the service's own bound

const FEED_STATES = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…" };

/** "/" is the top level (""); "/ui/<key>" is that key. */
function pageKey() {
  const path = location.pathname;
  return path.startsWith("/ui/") ? decodeURIComponent(path.slice(4)) : "";
}

/** A key made only of "_" segments (and the top level) lists trees; any other key is a tree. */
function isNamespace(key) {
  return key === "" || key.split(".").every((segment) => segment.startsWith("_"));
}

function pageLimit() {
  const n = parseInt(new URLSearchParams(location.search).get("limit"), 10);
  return n > 0 ? Math.min(n, MAX_LIMIT) : DEFAULT_LIMIT;
}

/** all › _portal › job123 › stage_input, each a link to its own page but the last. */
function showCrumbs(key) {
  const nav = document.getElementById("crumbs");
  const crumbs = [["all", ""]];
  key.split(".").filter(Boolean).forEach((segment, i, segments) => {
    crumbs.push([segment, segments.slice(0, i + 1).join(".")]);
  });
  crumbs.forEach(([text, target], i) => {
    const last = i === crumbs.length - 1;
    const crumb = el(last ? "span" : "a", "crumb", text);
    if (last) crumb.setAttribute("aria-current", "page");
    else crumb.href = uiPath(target);
    if (i > 0) nav.append(el("span", "sep", "›"));
    nav.append(crumb);
  });
}

/** The "token" box: paste a bearer token (kept in sessionStorage), or clear it. */
function setUpTokenBox() {
  document.getElementById("token-summary").textContent = getToken() ? "token ✓" : "token";
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken(document.getElementById("token-input").value.trim());
    location.reload();                          // every request and stream starts again with it
  });
  document.getElementById("token-clear").addEventListener("click", () => {
    setToken("");
    location.reload();
  });
}

function main() {
  takeTokenFromFragment();
  setUpTokenBox();
  const key = pageKey();
  document.title = key ? `${key} · progress` : "progress";
  showCrumbs(key);

  const errorBox = document.getElementById("error");
  const problem = (message) => {
    errorBox.textContent = message;
    errorBox.hidden = false;
  };
  const feedState = document.getElementById("live");
  const container = document.getElementById("view");
  const options = { limit: pageLimit(), problem };
  const view = isNamespace(key) ? new ListingView(container, key, options) : new TreeView(container, key, options);

  follow(key, {
    snapshot: (data) => view.snapshot(data),
    update: (data) => view.update(data),
    removed: (data) => view.removed(data),
    problem,
    state: (state) => {
      feedState.textContent = FEED_STATES[state];
      feedState.className = `live live-${state}`;
      if (state === "live") errorBox.hidden = true;
    },
  });
  setInterval(() => view.tick(), 1000);
}

main();
