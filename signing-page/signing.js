// What the page signs and sends, from its link: plain values, no DOM, no wallet.
//
// The pledge's typed data is exactly what verify-tx checks
// (functions/verify-tx/function/pledge.py): domain "eventworks bounty" version "1" on the
// bounty's chain, primary type
// Pledge(string bountyId,string repository,uint256 issueNumber,string denomination,uint256 amountBaseUnits).
// The events are eventing/events.py's BountySigned and IdentityLink.

export const SOURCE = "/eventworks/signing-page";
export const BOUNTY_SIGNED = "dev.eventworks.bounty.signed";
export const IDENTITY_LINK = "dev.eventworks.identity.link";
export const DOMAIN_NAME = "eventworks bounty";
export const DOMAIN_VERSION = "1";

export const PLEDGE_TYPES = Object.freeze({
  EIP712Domain: [
    { name: "name", type: "string" },
    { name: "version", type: "string" },
    { name: "chainId", type: "uint256" },
  ],
  Pledge: [
    { name: "bountyId", type: "string" },
    { name: "repository", type: "string" },
    { name: "issueNumber", type: "uint256" },
    { name: "denomination", type: "string" },
    { name: "amountBaseUnits", type: "uint256" },
  ],
});

// The link is not one this page can sign: the message names the parameter.
export class LinkError extends Error {}

// The same shapes as the event models (eventing/events.py) accept.
const REPOSITORY = /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/;
const POSITIVE = /^[1-9][0-9]{0,14}$/; // issue numbers and chain ids: safe JS integers
const BASE_UNITS = /^(0|[1-9][0-9]*)$/;
const DECIMAL = /^(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$/;
const DECIMALS = /^(0|[1-9][0-9]?)$/;
const DENOMINATION = /^[A-Za-z0-9._-]{1,32}$/;
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const MAX_BOUNTY_ID = 200;
const MAX_MESSAGE = 4096;

function required(params, name, pattern, what) {
  const value = params.get(name);
  if (value === null || value === "") throw new LinkError(`the link has no ${name}`);
  if (pattern !== null && !pattern.test(value)) {
    throw new LinkError(`the link's ${name} is not ${what}`);
  }
  return value;
}

// The amount in base units, exactly (BigInt): what is shown must be what is signed.
export function baseUnitsOf(amount, decimals) {
  const [whole, fraction = ""] = amount.split(".");
  if (fraction.length > decimals) return null;
  return (BigInt(whole + fraction.padEnd(decimals, "0"))).toString();
}

function readPledge(params) {
  const bountyId = required(params, "bounty", null, "");
  if (bountyId.length > MAX_BOUNTY_ID) {
    throw new LinkError(`the link's bounty is longer than ${MAX_BOUNTY_ID} characters`);
  }
  const pledge = {
    bountyId,
    repository: required(params, "repository", REPOSITORY, "owner/repository"),
    issueNumber: Number(required(params, "issue", POSITIVE, "an issue number")),
    denomination: required(params, "denomination", DENOMINATION, "a denomination"),
    amount: required(params, "amount", DECIMAL, "a decimal amount"),
    amountBaseUnits: required(params, "amount_base_units", BASE_UNITS, "an integer"),
    decimals: Number(required(params, "decimals", DECIMALS, "a number of decimals")),
    chainId: Number(required(params, "chain_id", POSITIVE, "a chain id")),
  };
  if (baseUnitsOf(pledge.amount, pledge.decimals) !== pledge.amountBaseUnits) {
    throw new LinkError(
      `the link's amount ${pledge.amount} is not ${pledge.amountBaseUnits} base units ` +
      `at ${pledge.decimals} decimals`);
  }
  return pledge;
}

function readLink(params) {
  const message = params.get("link");
  if (message.length > MAX_MESSAGE) {
    throw new LinkError(`the link's message is longer than ${MAX_MESSAGE} characters`);
  }
  return message;
}

// What the link asks for: {kind: "pledge", pledge}, {kind: "link", message} or
// {kind: "none"}. Throws LinkError for a link that names something malformed.
export function readRequest(search) {
  const params = new URLSearchParams(search);
  if (params.get("link")) return { kind: "link", message: readLink(params) };
  if (params.has("bounty")) return { kind: "pledge", pledge: readPledge(params) };
  return { kind: "none" };
}

// The address a SIWE message is for (its second line), or null.
export function siweAddress(message) {
  const line = message.split("\n")[1] ?? "";
  return ADDRESS.test(line) ? line : null;
}

export function typedData(pledge) {
  return {
    types: PLEDGE_TYPES,
    primaryType: "Pledge",
    domain: { name: DOMAIN_NAME, version: DOMAIN_VERSION, chainId: pledge.chainId },
    message: {
      bountyId: pledge.bountyId,
      repository: pledge.repository,
      issueNumber: pledge.issueNumber,
      denomination: pledge.denomination,
      // A decimal string: a JSON number loses precision beyond 2^53.
      amountBaseUnits: pledge.amountBaseUnits,
    },
  };
}

export function chainHex(chainId) {
  return "0x" + chainId.toString(16);
}

// personal_sign takes the message as 0x-hex of its UTF-8 bytes.
export function hexOfText(text) {
  const bytes = new TextEncoder().encode(text);
  return "0x" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// A structured-mode CloudEvent (application/cloudevents+json), with a fresh id.
export function cloudEvent(type, subject, data) {
  return {
    specversion: "1.0",
    id: crypto.randomUUID(),
    source: SOURCE,
    type,
    subject,
    datacontenttype: "application/json",
    data,
  };
}

export function bountySigned(pledge, funder, typed, signature) {
  return cloudEvent(BOUNTY_SIGNED, pledge.bountyId, {
    bounty_id: pledge.bountyId,
    funder_address: funder,
    typed_data: typed,
    signature,
    repository: pledge.repository,
    issue_number: pledge.issueNumber,
    denomination: pledge.denomination,
    amount_base_units: pledge.amountBaseUnits,
    chain_id: pledge.chainId,
  });
}

export function identityLink(message, signer, signature) {
  return cloudEvent(IDENTITY_LINK, signer, { message, signature });
}
