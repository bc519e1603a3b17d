"use strict";
// What the pages share: the token (from the page's own URL, sent as a header, never a cookie)
// and one way to call the JSON API.
const sieveToken = new URLSearchParams(window.location.search).get("token") || "";

class ApiError extends Error {
  constructor(status, message, sqlstate) {
    super(message);
    this.status = status;
    this.sqlstate = sqlstate;
  }
}

async function sieveApi(method, path, body) {
  const response = await fetch(path, {
    method: method,
    headers: { "Authorization": "Bearer " + sieveToken, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const data = await response.json().catch(() => ({ error: response.statusText, sqlstate: "" }));
  if (!response.ok) throw new ApiError(response.status, data.error, data.sqlstate);
  return data;
}

async function sieveBlob(path) {
  const response = await fetch(path, { headers: { "Authorization": "Bearer " + sieveToken }, cache: "no-store" });
  if (!response.ok) throw new ApiError(response.status, "image " + response.status, "");
  return URL.createObjectURL(await response.blob());
}

function el(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}
