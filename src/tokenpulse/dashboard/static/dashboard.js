// The tokenpulse dashboard. It polls the public REST API every few seconds with a read key (or an
// admin key, which also sees budgets and notifications) kept in this browser's localStorage and
// draws what the answers say; only rates and projections are worked out here, from the API's
// per-minute series.

const POLL_SECONDS = 5;
const RATE_MINUTES = 5;
const CHART_MINUTES = 60;
const TOP_TENANTS = 10;
const BUDGETS_SHOWN = 20;
const NOTIFICATIONS_SHOWN = 10;
const COUNT_UP_MS = 1200;
const MINUTE_MS = 60_000;
const KEY_ITEM = "tokenpulse.key";
const LAUNCH_ITEM = "tokenpulse.launch";
const CHART_ITEM = "tokenpulse.chart";
// Spend milestones of a launch, in the deployment's currency, once any of its usage is priced.
const COST_THRESHOLDS = ["1000", "10000", "100000", "1000000"];
const SVG_NS = "http://www.w3.org/2000/svg";
// Distinguishable on a dark background, also for the common colour-vision deficiencies.
const PALETTE = ["#4cc9f0", "#f8961e", "#90be6d", "#f9c74f", "#f28482", "#b5a8ff", "#43aa8b"];

const $ = (id) => document.getElementById(id);

// Numbers and instants, as people read them.

const grouped = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const UNITS = [
  [1e15, "Q"],
  [1e12, "T"],
  [1e9, "B"],
  [1e6, "M"],
  [1e3, "k"],
];

/** 1020000000000 as "1.02 T": three significant digits and a unit. */
function short(value) {
  const rounded = Number(value.toPrecision(3));
  for (const [size, unit] of UNITS) {
    if (Math.abs(rounded) >= size) return `${Number((rounded / size).toPrecision(3))} ${unit}`;
  }
  return String(rounded);
}

function exact(value, unit) {
  return `${grouped.format(value)} ${unit}`;
}

// Money, in the currency GET /v1/prices names; the API's amounts are exact decimal strings, kept
// as they are in titles.

let currency = null;

/** An amount as "$1,234.56" (or "$1.23K" when `compact`), in the deployment's currency. */
function money(amount, compact = false) {
  const value = Number(amount);
  const options = compact
    ? { notation: "compact", maximumSignificantDigits: 3 }
    : { maximumFractionDigits: value === 0 || Math.abs(value) >= 1 ? 2 : 4 };
  if (currency) {
    try {
      const code = currency.toUpperCase();
      return new Intl.NumberFormat("en-US", { style: "currency", currency: code, ...options }).format(value);
    } catch {
      // Not an ISO 4217 code: written after the number instead.
    }
  }
  const number = new Intl.NumberFormat("en-US", options).format(value);
  return currency ? `${number} ${currency}` : number;
}

function exactMoney(amount) {
  return currency ? `${amount} ${currency}` : String(amount);
}

/** `a − b` of two decimal strings, exactly, as a decimal string. */
function decimalMinus(a, b) {
  const [aWhole, aPart = ""] = a.split(".");
  const [bWhole, bPart = ""] = b.split(".");
  const places = Math.max(aPart.length, bPart.length);
  const scaled = (whole, part) => BigInt(whole + part.padEnd(places, "0"));
  const difference = scaled(aWhole, aPart) - scaled(bWhole, bPart);
  const sign = difference < 0n ? "-" : "";
  const digits = (difference < 0n ? -difference : difference).toString().padStart(places + 1, "0");
  if (places === 0) return sign + digits;
  const fraction = digits.slice(-places).replace(/0+$/, "");
  return sign + digits.slice(0, -places) + (fraction ? `.${fraction}` : "");
}

// What a count is of: tokens, or money.
const TOKENS = {
  metric: "total_tokens",
  short: (value) => short(value),
  exact: (value) => exact(value, "tokens"),
  perMinute: (value) => exact(value, "tokens per minute"),
  minus: (a, b) => a - b,
  idle: "no tokens",
};
const MONEY = {
  metric: "cost",
  short: (value) => money(value, true),
  exact: (value) => exactMoney(value),
  perMinute: (value) => `${money(value)} per minute`,
  minus: decimalMinus,
  idle: "no spend",
};

function duration(seconds) {
  const minutes = Math.round(seconds / 60);
  if (seconds < 60) return `${Math.max(0, Math.round(seconds))} s`;
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

const timeOfDay = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const timeWithSeconds = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
const dayAndTime = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});

/** An instant, with its date only when it is not today. */
function when(instant) {
  const date = new Date(instant);
  const today = new Date().toDateString() === date.toDateString();
  return today ? timeOfDay.format(date) : dayAndTime.format(date);
}

function wholeMinutesIso(milliseconds) {
  const minute = Math.floor(milliseconds / MINUTE_MS) * MINUTE_MS;
  return new Date(minute).toISOString().replace(".000Z", "Z");
}

// Building the page's elements; attributes only, never inline style, which the page's
// Content-Security-Policy forbids.

function element(tag, attributes = {}, ...children) {
  const made = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
  made.append(...children);
  return made;
}

function svgElement(tag, attributes = {}, ...children) {
  const made = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, String(value));
  made.append(...children);
  return made;
}

function showNumber(target, value, unit) {
  target.textContent = short(value);
  target.title = exact(value, unit);
}

function showProblem(id, error) {
  const target = $(id);
  target.hidden = error === null;
  target.textContent = error === null ? "" : error.message;
}

// The API.

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

let key = localStorage.getItem(KEY_ITEM);

async function api(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  let response;
  try {
    response = await fetch(url, { headers: { Authorization: `Bearer ${key}` }, cache: "no-store" });
  } catch {
    throw new ApiError(0, "the service cannot be reached", 0);
  }
  const body = await response.json().catch(() => null);
  if (response.ok) return body;
  const message = body?.error?.message ?? `the service answered ${response.status}`;
  throw new ApiError(response.status, message, Number(response.headers.get("Retry-After")) || 0);
}

/** When the launch of `model` passed `threshold` of spend, from its launch on. */
function costMilestone(model, threshold) {
  return api("/v1/milestones", { model, metric: "cost", threshold });
}

async function readiness() {
  const response = await fetch("/readyz", { cache: "no-store" });
  const body = await response.json();
  return { ready: response.ok, checks: body.checks ?? {} };
}

/** Settle a promise into {value} or {error}, so that one failed panel leaves the others be. */
async function settle(promise) {
  try {
    return { value: await promise, error: null };
  } catch (error) {
    return { value: null, error };
  }
}

// The launch the counter follows: the one picked here before, else the latest that has begun.

let launchesShown = "";

function chooseLaunch(launches) {
  const picker = $("launch");
  const listed = JSON.stringify(launches);
  if (listed !== launchesShown) {
    launchesShown = listed;
    picker.replaceChildren(
      ...launches.map((launch) => element("option", { value: launch.model }, launch.model)),
    );
  }
  picker.disabled = launches.length === 0;
  const byRecency = [...launches].sort((a, b) => Date.parse(b.launched_at) - Date.parse(a.launched_at));
  const begun = byRecency.find((launch) => Date.parse(launch.launched_at) <= Date.now());
  const picked = launches.find((launch) => launch.model === localStorage.getItem(LAUNCH_ITEM));
  const launch = picked ?? begun ?? byRecency.at(-1) ?? null;
  picker.value = launch?.model ?? "";
  return launch;
}

// The counter counts up to each new total, so that it ticks as events arrive; its title always
// holds the exact total the API answered.

const counter = {
  shown: 0,
  frame: 0,
  model: null,

  show(value, model) {
    const target = $("counter");
    target.title = exact(value, "tokens");
    cancelAnimationFrame(this.frame);
    const from = model === this.model ? this.shown : 0;
    this.model = model;
    const started = performance.now();
    const step = (now) => {
      const progress = Math.min(1, (now - started) / COUNT_UP_MS);
      this.shown = progress < 1 ? from + (value - from) * (1 - (1 - progress) ** 3) : value;
      target.textContent = grouped.format(Math.floor(this.shown));
      if (progress < 1) this.frame = requestAnimationFrame(step);
    };
    this.frame = requestAnimationFrame(step);
  },

  clear(label) {
    cancelAnimationFrame(this.frame);
    this.model = null;
    this.shown = 0;
    $("counter").textContent = "–";
    $("counter").title = label;
  },
};

function drawLaunch(launch, summary) {
  $("counter-label").textContent = launch ? `${launch.model}: tokens since launch` : "no launch";
  if (!launch) {
    $("spend").hidden = true;
    counter.clear("no launch is set");
    $("counter-short").textContent = "";
    $("launched").textContent = "an admin key sets one: PUT /v1/launches/{model}";
    $("peak").textContent = "";
    $("breakdown").replaceChildren();
    return;
  }
  const launchedAt = Date.parse(launch.launched_at);
  const since = (Date.now() - launchedAt) / 1000;
  $("launched").textContent =
    since >= 0
      ? `launched ${when(launchedAt)}, ${duration(since)} ago`
      : `launches ${when(launchedAt)}, in ${duration(-since)}`;
  $("launched").title = launch.launched_at;
  if (!summary) {
    $("spend").hidden = true;
    return;
  }
  const total = summary.since_launch.total_tokens;
  counter.show(total, launch.model);
  showNumber($("counter-short"), total, "tokens");
  drawBreakdown(summary.since_launch);
  const cost = summary.since_launch.cost;
  $("spend").hidden = cost === null;
  $("spend").textContent = cost === null ? "" : `${money(cost)} spent since launch`;
  $("spend").title = cost === null ? "" : exactMoney(cost);
  const peak = summary.peak_minute;
  $("peak").textContent = peak ? `peak minute ${when(peak.start)}: ${short(peak.total_tokens)}` : "";
  $("peak").title = peak ? exact(peak.total_tokens, `tokens in the minute from ${peak.start}`) : "";
}

/** What the total is made of: requests, and input and output tokens with their special parts. */
function drawBreakdown(measures) {
  const part = (text, title) => {
    const span = element("span", {}, text);
    span.title = title;
    return span;
  };
  const share = (some, whole) => `${whole ? Math.round((100 * some) / whole) : 0}%`;
  const { requests, input_tokens: input, output_tokens: output } = measures;
  const { cached_input_tokens: cached, cache_write_input_tokens: written } = measures;
  const { reasoning_tokens: reasoning } = measures;
  $("breakdown").replaceChildren(
    part(`${short(requests)} requests`, exact(requests, "requests")),
    part(
      `${short(input)} input, ${share(cached, input)} cached, ${share(written, input)} cache writes`,
      [
        exact(input, "input tokens"),
        exact(cached, "of them read from a cache"),
        exact(written, "of them written to a cache"),
      ].join(", "),
    ),
    part(
      `${short(output)} output, ${share(reasoning, output)} reasoning`,
      `${exact(output, "output tokens")}, ${exact(reasoning, "of them reasoning")}`,
    ),
  );
}

function drawMilestones(summary, costMilestones, perMinute) {
  const launchedAt = Date.parse(summary.launched_at);
  const items = milestoneItems(summary.milestones, summary.since_launch.total_tokens, launchedAt, perMinute.tokens, TOKENS);
  if (summary.since_launch.cost !== null) {
    items.push(...milestoneItems(costMilestones, summary.since_launch.cost, launchedAt, perMinute.cost, MONEY));
  }
  $("milestones").replaceChildren(...items);
}

/** The milestones of one kind (tokens or money), each reached, the next, or later; `current`
 * is the sum so far as the API answers it (a count, or an amount's decimal string). */
function milestoneItems(milestones, current, launchedAt, perMinute, kind) {
  const next = milestones.find((milestone) => milestone.crossed_at === null);
  return milestones.map((milestone) => {
    const state = milestone.crossed_at !== null ? "reached" : milestone === next ? "next" : "later";
    const goal = Number(milestone.threshold);
    const threshold = element("span", { class: "threshold" }, kind.short(goal));
    threshold.title = kind.exact(milestone.threshold);
    const detail = element("span", { class: "detail" });
    if (state === "reached") {
      const after = (Date.parse(milestone.crossed_at) - launchedAt) / 1000;
      detail.textContent = `reached ${when(milestone.crossed_at)}, ${duration(after)} after launch`;
      detail.title = `${milestone.crossed_at}, event ${milestone.event_id}`;
    } else {
      const remaining = kind.minus(milestone.threshold, current);
      detail.textContent = `${kind.short(Number(remaining))} to go`;
      detail.title = `${kind.exact(remaining)} to go`;
      if (state === "next") detail.append(element("br"), projection(Number(remaining), perMinute, kind));
    }
    const item = element("li", { class: state, "data-metric": kind.metric }, threshold, detail);
    if (state === "next") {
      const bar = element("progress", { max: goal, value: Number(current) });
      bar.title = `${((100 * Number(current)) / goal).toFixed(1)}% of the way`;
      item.append(bar);
    }
    return item;
  });
}

function projection(remaining, perMinute, kind) {
  if (perMinute === null) return "no rate to project from";
  if (perMinute === 0) return `${kind.idle} in the last ${RATE_MINUTES} minutes`;
  const seconds = (60 * remaining) / perMinute;
  const at = Date.now() + seconds * 1000;
  const text = element("span", { class: "eta" }, `at the current rate ${when(at)}, in ${duration(seconds)}`);
  text.title = `${new Date(at).toISOString()}, at ${kind.perMinute(perMinute)}`;
  return text;
}

// The last hour, minute by minute and model by model. The API's last bucket is the minute now
// running, still filling: the chart and the rates use the whole minutes before it.

function lastHour() {
  const start = wholeMinutesIso(Date.now() - CHART_MINUTES * MINUTE_MS);
  return api("/v1/usage", { bucket: "1m", start, group_by: "model" });
}

function wholeMinutes(usage) {
  return usage.data.slice(0, -1);
}

/** A result's figure of `kind`: its tokens, or its cost (nothing where it is not priced). */
function figure(result, kind) {
  return kind === MONEY ? Number(result.cost ?? 0) : result.total_tokens;
}

/** [model, figures, results] per model, the busiest first: one figure and result a bucket. */
function perModel(buckets, kind) {
  const series = new Map();
  buckets.forEach((bucket, index) => {
    for (const result of bucket.results) {
      if (!series.has(result.model)) series.set(result.model, [buckets.map(() => 0), buckets.map(() => null)]);
      const [figures, results] = series.get(result.model);
      figures[index] = figure(result, kind);
      results[index] = result;
    }
  });
  const total = (values) => values.reduce((sum, value) => sum + value, 0);
  return [...series]
    .map(([model, [figures, results]]) => [model, figures, results])
    .sort((a, b) => total(b[1]) - total(a[1]) || (a[0] < b[0] ? -1 : 1));
}

function recentMinutes(usage) {
  return wholeMinutes(usage).slice(-RATE_MINUTES);
}

function ratesOf(usage) {
  const minutes = recentMinutes(usage);
  const sums = { requests: 0, total_tokens: 0 };
  for (const bucket of minutes) {
    for (const result of bucket.results) {
      sums.requests += result.requests;
      sums.total_tokens += result.total_tokens;
    }
  }
  return { minutes: minutes.length, ...sums };
}

function perMinuteOf(usage, model, kind = TOKENS) {
  const minutes = recentMinutes(usage);
  if (minutes.length === 0) return null;
  const sum = minutes
    .flatMap((bucket) => bucket.results)
    .filter((result) => result.model === model)
    .reduce((total, result) => total + figure(result, kind), 0);
  return sum / minutes.length;
}

function drawRates(usage) {
  const rates = ratesOf(usage);
  const seconds = Math.max(1, rates.minutes * 60);
  showNumber($("tokens-per-second"), rates.total_tokens / seconds, "tokens per second");
  showNumber($("requests-per-second"), rates.requests / seconds, "requests per second");
  showNumber($("tokens-per-minute"), (60 * rates.total_tokens) / seconds, "tokens per minute");
  $("rates-note").textContent = `averaged over the last ${rates.minutes} whole minutes`;
}

/** A round number at or above `value`, so that the axis reads 0, ¼, ½, ¾ and all of it. */
function niceCeiling(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 4, 5, 8, 10].map((step) => step * magnitude).find((top) => top >= value);
}

let lastUsage = null;
let drawnWidth = 0;
let charting = localStorage.getItem(CHART_ITEM) === "cost" ? MONEY : TOKENS;

/** Whether anything in the hour is priced: only then can the chart show cost. */
function pricedIn(usage) {
  return usage.data.some((bucket) => bucket.results.some((result) => result.cost !== null));
}

function drawChart(usage) {
  lastUsage = usage;
  const priced = pricedIn(usage);
  const kind = priced ? charting : TOKENS;
  $("show-cost").disabled = !priced;
  $("show-cost").title = priced ? "" : "no usage of the last hour is priced";
  $("show-tokens").setAttribute("aria-pressed", String(kind === TOKENS));
  $("show-cost").setAttribute("aria-pressed", String(kind === MONEY));
  const what = kind === MONEY ? "cost" : "tokens";
  $("chart-title").textContent = `${what} per minute, last hour`;
  const plot = $("chart");
  drawnWidth = plot.clientWidth;
  const width = Math.max(280, drawnWidth);
  const height = Math.round(Math.min(300, Math.max(190, width * 0.34)));
  const margin = { left: 52, right: 22, top: 10, bottom: 26 };
  const buckets = wholeMinutes(usage);
  const models = perModel(buckets, kind);
  const highest = Math.max(kind === MONEY ? 0.01 : 1, ...models.flatMap(([, values]) => values));
  const top = niceCeiling(highest);
  const step = (width - margin.left - margin.right) / Math.max(1, buckets.length - 1);
  const x = (index) => margin.left + index * step;
  const y = (value) => margin.top + (1 - value / top) * (height - margin.top - margin.bottom);

  const chart = svgElement("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": `${what} per minute over the last hour, one line per model`,
  });
  for (let line = 0; line <= 4; line += 1) {
    const value = (top * line) / 4;
    chart.append(
      svgElement("line", { class: "grid", x1: margin.left, x2: width - margin.right, y1: y(value), y2: y(value) }),
      svgElement("text", { class: "axis", x: margin.left - 6, y: y(value) + 4, "text-anchor": "end" }, kind.short(value)),
    );
  }
  buckets.forEach((bucket, index) => {
    const start = new Date(bucket.start);
    if (start.getMinutes() % 15 === 0) {
      chart.append(
        svgElement("text", { class: "axis", x: x(index), y: height - 8, "text-anchor": "middle" }, timeOfDay.format(start)),
      );
    }
  });
  models.forEach(([, values], index) => {
    const points = values.map((value, at) => `${x(at).toFixed(1)},${y(value).toFixed(1)}`);
    chart.append(
      svgElement("polyline", { class: "series", stroke: PALETTE[index % PALETTE.length], points: points.join(" ") }),
    );
  });
  buckets.forEach((bucket, index) => {
    const lines = models.map(([model, values, results]) => {
      if (kind === TOKENS) return `${model}: ${exact(values[index], "tokens")}`;
      const cost = results[index]?.cost ?? null;
      return `${model}: ${cost === null ? "not priced" : exactMoney(cost)}`;
    });
    const label = `${timeOfDay.format(new Date(bucket.start))} to ${timeOfDay.format(new Date(bucket.end))}`;
    chart.append(
      svgElement(
        "rect",
        { class: "hover", x: x(index) - step / 2, y: margin.top, width: step, height: height - margin.top - margin.bottom },
        svgElement("title", {}, [label, ...lines].join("\n")),
      ),
    );
  });
  plot.replaceChildren(chart);

  $("legend").replaceChildren(
    ...models.map(([model], index) => {
      const swatch = element("span", { class: "swatch" });
      swatch.style.backgroundColor = PALETTE[index % PALETTE.length];
      const rate = element("span", { class: "value" });
      const perMinute = perMinuteOf(usage, model, kind) ?? 0;
      rate.textContent = `${kind.short(perMinute)}/min`;
      rate.title = `${kind.perMinute(perMinute)} over the last ${RATE_MINUTES} whole minutes`;
      return element("li", {}, swatch, element("span", { class: "model" }, model), rate);
    }),
  );
  if (models.length === 0) $("legend").replaceChildren(element("li", { class: "empty" }, "no usage in the last hour"));
}

// The tenants with the most tokens over the last 24 hours; a tenant-bound key sees itself only.

function drawTenants(totals) {
  const results = totals.results.filter((result) => result.total_tokens > 0);
  const all = results.reduce((sum, result) => sum + result.total_tokens, 0);
  const top = results
    .sort((a, b) => b.total_tokens - a.total_tokens || (a.tenant < b.tenant ? -1 : 1))
    .slice(0, TOP_TENANTS);
  const rows = top.map((result) => {
    const fill = element("span", { class: "fill" });
    fill.style.width = `${(100 * result.total_tokens) / top[0].total_tokens}%`;
    const value = element("span", { class: "value" });
    showNumber(value, result.total_tokens, "tokens");
    const spend = element("span", { class: "spend" }, result.cost === null ? "–" : money(result.cost, true));
    spend.title = result.cost === null ? "not priced" : exactMoney(result.cost);
    const share = element("span", { class: "share" }, `${Math.round((100 * result.total_tokens) / all)}%`);
    return element(
      "li",
      { "data-tenant": result.tenant },
      element("span", { class: "name", title: result.tenant }, result.tenant),
      element("span", { class: "bar" }, fill),
      value,
      spend,
      share,
    );
  });
  if (rows.length === 0) rows.push(element("li", { class: "empty" }, "no usage in the last 24 hours"));
  $("tenants").replaceChildren(...rows);
}

// Budgets and the notifications of their crossings. Listing either needs an admin key, checking
// a budget a read key; a key refused the list once is not asked again, as its scope never
// changes.

const DIMENSIONS = ["project", "model", "api_key_id"];
const DIMENSION_NAMES = { project: "project", model: "model", api_key_id: "key" };
const UNITS_OF = {
  requests: "requests",
  input_tokens: "input tokens",
  cached_input_tokens: "cached input tokens",
  cache_write_input_tokens: "cache write input tokens",
  output_tokens: "output tokens",
  reasoning_tokens: "reasoning tokens",
  total_tokens: "tokens",
};
const KINDS = {
  "budget.threshold_crossed": "budget",
  "launch.milestone_crossed": "launch",
  "webhook.test": "test",
};

let budgetsRefused = { key: null, reason: "" };

/** How amounts of `metric` read: money for cost, else a count of its unit. */
function amountsOf(metric) {
  if (metric === "cost") {
    return { name: "cost", text: (value) => money(value), counted: (value) => money(value), exact: exactMoney };
  }
  const unit = UNITS_OF[metric] ?? metric.replaceAll("_", " ");
  return {
    name: unit,
    text: (value) => short(value),
    counted: (value) => `${short(value)} ${unit}`,
    exact: (value) => exact(value, unit),
  };
}

function selectionOf(budget) {
  const named = DIMENSIONS.filter((name) => budget[name] !== null);
  return Object.fromEntries(named.map((name) => [name, budget[name]]));
}

/** The fewest checks that answer every budget: the check of a call answers each budget of its
 * tenant whose every named dimension is the call's. */
function checksFor(budgets) {
  const calls = new Map();
  for (const budget of budgets) {
    const call = { tenant: budget.tenant, ...selectionOf(budget) };
    calls.set(JSON.stringify(call), call);
  }
  const answers = (wide, narrow) => Object.entries(narrow).every(([name, value]) => wide[name] === value);
  const distinct = [...calls.values()];
  return distinct.filter((call) => !distinct.some((other) => other !== call && answers(other, call)));
}

/** The budgets with what their current windows have used, and the newest notifications. */
async function watchBudgets() {
  if (budgetsRefused.key === key) return { refused: budgetsRefused.reason };
  const asked = key;
  const listed = await settle(api("/v1/budgets"));
  if (listed.error?.status === 403) {
    budgetsRefused = { key: asked, reason: listed.error.message };
    return { refused: listed.error.message };
  }
  const shown = listed.value?.budgets.slice(0, BUDGETS_SHOWN) ?? [];
  const [checks, notifications] = await Promise.all([
    settle(Promise.all(checksFor(shown).map((call) => api("/v1/budgets/check", call)))),
    settle(api("/v1/notifications", { limit: NOTIFICATIONS_SHOWN })),
  ]);
  return { refused: null, listed, checks, notifications };
}

function labelled(tag, className, text, title = "") {
  const made = element(tag, { class: className }, text);
  if (title) made.title = title;
  return made;
}

/** The thresholds a budget notifies at: its percentages of the limit, then its amounts. */
function thresholdsOf(budget, amounts) {
  const percents = budget.thresholds.length ? [`${budget.thresholds.join(", ")}%`] : [];
  return [...percents, ...budget.amounts.map((amount) => amounts.text(amount))].join(", ");
}

/** The exact bounds of the window a budget's check counted. */
function boundsOf(checked) {
  if (!checked) return "";
  const end = checked.window_end === null ? "on" : `to ${checked.window_end}`;
  return `from ${checked.window_start} ${end}`;
}

function budgetRow(budget, checked) {
  const amounts = amountsOf(budget.metric);
  const figure = (className, value) =>
    value === null || value === undefined
      ? labelled("td", className, "–", checked ? "not priced" : "not checked")
      : labelled("td", className, amounts.text(value), amounts.exact(value));
  const named = Object.entries(selectionOf(budget)).map(([name, value]) => `${DIMENSION_NAMES[name]} ${value}`);
  const period = budget.window === "since" ? `since ${when(budget.since)}` : `${budget.window}, ${budget.tz}`;
  const limit = figure("limit", budget.limit);
  limit.dataset.label = "limit";
  limit.append(labelled("span", "notify", `at ${thresholdsOf(budget, amounts)}`));
  const used = figure("used", checked?.used);
  if (checked && checked.used !== null) {
    const share = Number(checked.used) / Number(checked.limit);
    const bar = element("progress", { max: 1, value: Math.min(1, share) });
    bar.title = `${(100 * share).toFixed(1)}% of the limit`;
    used.append(bar);
  }
  const remaining = figure("remaining", checked?.remaining);
  remaining.dataset.label = "remaining";
  const state = checked ? (checked.exceeded ? "exceeded" : "within") : "unknown";
  return element(
    "tr",
    { "data-budget": budget.id },
    element(
      "td",
      {},
      labelled("span", "tenant", budget.tenant, budget.id),
      labelled("span", "selection", named.length ? named.join(", ") : "all usage"),
    ),
    element(
      "td",
      {},
      labelled("span", "metric", amounts.name),
      labelled("span", "window", period, boundsOf(checked)),
    ),
    used,
    limit,
    remaining,
    labelled("td", `state ${state}`, state === "unknown" ? "–" : state),
  );
}

function drawBudgets(watched) {
  const note = $("budgets-note");
  if (watched.refused !== null) {
    $("budgets-table").hidden = true;
    note.hidden = false;
    note.textContent = "an admin key shows the budgets here";
    note.title = watched.refused;
    return;
  }
  const { listed, checks } = watched;
  if (!listed.value) return;
  const budgets = listed.value.budgets;
  const checked = new Map(
    (checks.value ?? []).flatMap((answer) => answer.budgets).map((budget) => [budget.id, budget]),
  );
  const rows = budgets.slice(0, BUDGETS_SHOWN).map((budget) => budgetRow(budget, checked.get(budget.id)));
  $("budgets").replaceChildren(...rows);
  $("budgets-table").hidden = rows.length === 0;
  note.hidden = budgets.length <= BUDGETS_SHOWN && rows.length > 0;
  note.title = "";
  note.textContent =
    rows.length === 0
      ? "no budgets: an admin key sets one, POST /v1/budgets"
      : `the first ${BUDGETS_SHOWN} of ${budgets.length} budgets`;
}

/** What crossed, as a notification's body says: a budget's threshold or amount, or a launch's
 * milestone; a test crosses nothing. */
function crossingOf(notification) {
  const body = notification.body;
  if (notification.type === "budget.threshold_crossed") {
    const amounts = amountsOf(body.metric);
    const amount = amounts.exact(body.amount);
    if (body.threshold === null) {
      return { subject: body.tenant, text: amounts.counted(body.amount), title: `${amount} of ${amounts.name}` };
    }
    return {
      subject: body.tenant,
      text: `${body.threshold}% of ${amounts.counted(body.limit)}`,
      title: `${body.threshold}% of ${amounts.exact(body.limit)}: ${amount}`,
    };
  }
  if (notification.type === "launch.milestone_crossed") {
    const amounts = amountsOf(body.metric);
    return { subject: body.model, text: amounts.counted(body.amount), title: `${amounts.exact(body.amount)} since launch` };
  }
  return { subject: body.webhook_id ?? "", text: notification.type === "webhook.test" ? "a test" : notification.type, title: "" };
}

/** Where a notification stands: each delivery's state, and its attempts in the title. */
function deliveryOf(deliveries) {
  if (deliveries.length === 0) return { text: "not sent", state: "none", title: "no webhook receives it" };
  const counts = new Map();
  for (const delivery of deliveries) counts.set(delivery.state, (counts.get(delivery.state) ?? 0) + 1);
  const states = [...counts.keys()];
  const lines = deliveries.map((delivery) => {
    const tried = delivery.attempts.length;
    const last = delivery.attempts.at(-1);
    const parts = [`${delivery.webhook_id}: ${delivery.state}`, `${tried} attempt${tried === 1 ? "" : "s"}`];
    if (last) parts.push(`the last answered ${last.status ?? last.error}`);
    if (delivery.next_attempt_at) parts.push(`the next at ${delivery.next_attempt_at}`);
    return parts.join(", ");
  });
  return {
    text: deliveries.length === 1 ? states[0] : [...counts].map(([state, count]) => `${count} ${state}`).join(", "),
    state: states.length === 1 ? states[0] : "mixed",
    title: lines.join("\n"),
  };
}

function notificationItem(notification) {
  const body = notification.body;
  const crossing = crossingOf(notification);
  const delivery = deliveryOf(notification.deliveries);
  const at = body.crossed_at ?? notification.found_at;
  const corrected = notification.corrected_at ? `, corrected at ${notification.corrected_at}` : "";
  return element(
    "li",
    { "data-notification": notification.id, "data-type": notification.type },
    labelled("span", "kind", KINDS[notification.type] ?? notification.type, notification.type),
    element(
      "span",
      { class: "what" },
      labelled("span", "subject", crossing.subject),
      " ",
      labelled("span", "crossed", crossing.text, crossing.title),
    ),
    labelled("span", "at", `${when(at)}${corrected ? " (corrected)" : ""}`, `${at}${corrected}`),
    labelled("span", "event", body.event_id ? `event ${body.event_id}` : "", body.event_id ?? ""),
    labelled("span", `delivery ${delivery.state}`, delivery.text, delivery.title),
  );
}

/** Newest first, as the API lists them; of those found in one search, the latest crossing first,
 * which the API leaves in no particular order. */
function newestFirst(notifications) {
  const crossed = (notification) => Date.parse(notification.body.crossed_at ?? notification.found_at);
  return [...notifications].sort(
    (a, b) => Date.parse(b.found_at) - Date.parse(a.found_at) || crossed(b) - crossed(a),
  );
}

function drawNotifications(watched) {
  const note = $("notifications-note");
  if (watched.refused !== null) {
    $("notifications").replaceChildren();
    note.hidden = false;
    note.textContent = "an admin key shows the notifications here";
    note.title = watched.refused;
    return;
  }
  const listed = watched.notifications.value;
  if (!listed) return;
  $("notifications").replaceChildren(...newestFirst(listed.notifications).map(notificationItem));
  note.hidden = listed.notifications.length > 0;
  note.title = "";
  note.textContent = "no notifications yet";
}

function drawReadiness(outcome) {
  const badge = $("readiness");
  const failed = Object.entries(outcome.value?.checks ?? {}).filter(([, verdict]) => verdict !== "ok");
  if (outcome.error) {
    badge.textContent = "unreachable";
  } else if (outcome.value.ready) {
    badge.textContent = "ready";
  } else {
    badge.textContent = `not ready: ${failed.map(([check, verdict]) => `${check} ${verdict}`).join(", ")}`;
  }
  badge.className = `badge ${outcome.value?.ready ? "ok" : "bad"}`;
  badge.title = outcome.error ? outcome.error.message : JSON.stringify(outcome.value.checks);
}

// One round of polling: every panel asks for its own data and shows its own trouble.

async function refresh() {
  const [ready, launches, usage, tenants, watched] = await Promise.all([
    settle(readiness()),
    settle(api("/v1/launches")),
    settle(lastHour()),
    settle(api("/v1/totals", { window: "24h", group_by: "tenant" })),
    watchBudgets(),
  ]);
  const launch = launches.value ? chooseLaunch(launches.value.launches) : null;
  const none = { value: null, error: null };
  // The currency is the deployment's: asked for until it is known, with the fewest versions.
  const [summary, prices] = await Promise.all([
    launch ? settle(api(`/v1/launches/${encodeURIComponent(launch.model)}`)) : none,
    currency === null ? settle(api("/v1/prices", launch ? { model: launch.model } : {})) : none,
  ]);
  if (prices.value) currency = prices.value.currency;
  const spending = summary.value?.since_launch.cost != null;
  const costMilestones = spending
    ? await settle(Promise.all(COST_THRESHOLDS.map((threshold) => costMilestone(launch.model, threshold))))
    : { value: [], error: null };

  const watching = watched.refused === null ? [watched.listed, watched.checks, watched.notifications] : [];
  const outcomes = [launches, usage, tenants, summary, prices, costMilestones, ...watching];
  // /v1/launches is open to every read key: refused there, the key itself is wrong.
  const refused = outcomes.find((outcome) => [401, 403].includes(outcome.error?.status));
  if (refused && (refused === launches || refused.error.status === 401)) {
    askForKey(refused.error.message);
    return null;
  }

  drawReadiness(ready);
  if (!launches.error) drawLaunch(launch, summary.value);
  showProblem("launch-problem", launches.error ?? summary.error);
  if (usage.value) {
    drawChart(usage.value);
    drawRates(usage.value);
  }
  showProblem("chart-problem", usage.error);
  if (summary.value) {
    const perMinute = {
      tokens: usage.value ? perMinuteOf(usage.value, launch.model) : null,
      cost: usage.value ? perMinuteOf(usage.value, launch.model, MONEY) : null,
    };
    drawMilestones(summary.value, costMilestones.value ?? [], perMinute);
  }
  if (!launch && !launches.error) $("milestones").replaceChildren();
  showProblem("milestones-problem", summary.error ?? costMilestones.error);
  if (tenants.value) drawTenants(tenants.value);
  showProblem("tenants-problem", tenants.error);
  drawBudgets(watched);
  showProblem("budgets-problem", watched.refused === null ? (watched.listed.error ?? watched.checks.error) : null);
  drawNotifications(watched);
  showProblem("notifications-problem", watched.refused === null ? watched.notifications.error : null);

  const failures = outcomes.filter((outcome) => outcome.error);
  $("updated").textContent = failures.length
    ? `update at ${timeWithSeconds.format(new Date())} incomplete: ${failures[0].error.message}`
    : `updated ${timeWithSeconds.format(new Date())}, every ${POLL_SECONDS} s`;
  return Math.max(POLL_SECONDS, ...failures.map((outcome) => outcome.error.retryAfter));
}

// Polling runs while there is a key; a new key or launch starts a new round at once.

let round = 0;

async function poll() {
  round += 1;
  const mine = round;
  while (mine === round) {
    let wait = POLL_SECONDS;
    try {
      wait = await refresh();
    } catch (error) {
      // A fault in drawing must not end the polling; it is shown, and the next round may pass.
      console.error(error);
      $("updated").textContent = `the page failed to draw an update: ${error.message}`;
    }
    if (wait === null || mine !== round) return;
    await new Promise((resolve) => setTimeout(resolve, wait * 1000));
  }
}

/** Stop polling and ask for a key: at the start, on request, or when the API refused this one. */
function askForKey(problem) {
  round += 1;
  localStorage.removeItem(KEY_ITEM);
  showProblem("key-problem", problem ? new Error(problem) : null);
  $("change-key").hidden = true;
  const dialog = $("key-dialog");
  if (!dialog.open) dialog.showModal();
  $("key").focus();
}

function useKey(value) {
  key = value;
  localStorage.setItem(KEY_ITEM, value);
  const id = value.split("_")[1];
  $("change-key").textContent = id ? `key tp_${id}` : "key";
  $("change-key").hidden = false;
  poll();
}

function start() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key").value.trim();
    if (!value) return;
    $("key").value = "";
    $("key-dialog").close();
    useKey(value);
  });
  $("key-dialog").addEventListener("cancel", (event) => event.preventDefault());
  $("change-key").addEventListener("click", () => askForKey(null));
  for (const [button, kind] of [["show-tokens", TOKENS], ["show-cost", MONEY]]) {
    $(button).addEventListener("click", () => {
      charting = kind;
      localStorage.setItem(CHART_ITEM, kind === MONEY ? "cost" : "tokens");
      if (lastUsage) drawChart(lastUsage);
    });
  }
  $("launch").addEventListener("change", () => {
    localStorage.setItem(LAUNCH_ITEM, $("launch").value);
    poll();
  });
  // Redrawn on the next frame, so that the chart's own new height is not a resize in the loop.
  new ResizeObserver(() => {
    requestAnimationFrame(() => {
      if (lastUsage && $("chart").clientWidth !== drawnWidth) drawChart(lastUsage);
    });
  }).observe($("chart"));
  if (key) useKey(key);
  else askForKey(null);
}

start();
