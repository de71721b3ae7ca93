// The page: shows what the link asks to sign, has the wallet (EIP-1193 window.ethereum)
// sign it, and posts the event to its own origin's /events (stack/signing_page.py, and
// docs/decisions.md "The signing page"). Everything shown is set as text, never as HTML.

import * as signing from "./signing.js";

const EVENTS_PATH = "events";
const $ = (id) => document.getElementById(id);

// A step that failed, with what the user should read.
class Failure extends Error {}

// The signed event could not be delivered, but may be later: the next click sends the
// same event (same id, so the broker's consumers see one event) without signing again.
class NotDelivered extends Failure {
  constructor(message, event, done) {
    super(message);
    this.event = event;
    this.done = done;
  }
}

// Statuses worth sending the same event again for (the Knative data plane's retryable ones).
const RETRYABLE = new Set([404, 408, 409, 429, 500, 502, 503, 504]);

// EIP-1193 and EIP-1474 error codes a wallet answers with, in the user's words.
const WALLET_ERRORS = {
  4001: "You refused the request in your wallet. Nothing was sent.",
  4100: "Your wallet did not allow this page to use the account. Nothing was sent.",
  4200: "Your wallet cannot do this. Nothing was sent.",
  4900: "Your wallet is not connected to any chain. Nothing was sent.",
  4901: "Your wallet is not connected to the chain. Nothing was sent.",
  [-32002]: "Your wallet already has a request from this page waiting: open your wallet.",
};

async function ask(wallet, method, params) {
  try {
    return await wallet.request(params === undefined ? { method } : { method, params });
  } catch (error) {
    const known = WALLET_ERRORS[error?.code];
    throw new Failure(known ?? `Your wallet failed: ${error?.message ?? error}. Nothing was sent.`);
  }
}

async function account(wallet) {
  const accounts = await ask(wallet, "eth_requestAccounts");
  if (!Array.isArray(accounts) || accounts.length === 0) {
    throw new Failure("Your wallet gave no account. Nothing was sent.");
  }
  return accounts[0];
}

async function chainOf(wallet) {
  return Number.parseInt(await ask(wallet, "eth_chainId"), 16);
}

// The pledge is for one chain: ask the wallet to switch, or say which chain it must be on.
async function ensureChain(wallet, wanted) {
  const current = await chainOf(wallet);
  if (current === wanted) return;
  const wrong = `Your wallet is on chain ${current}; this pledge is for chain ${wanted}. ` +
    `Switch your wallet to chain ${wanted} and sign again. Nothing was sent.`;
  try {
    await wallet.request({
      method: "wallet_switchEthereumChain",
      params: [{ chainId: signing.chainHex(wanted) }],
    });
  } catch {
    throw new Failure(wrong);
  }
  if ((await chainOf(wallet)) !== wanted) throw new Failure(wrong);
}

// Sends the signed event; `done` is what the user reads once it is delivered.
async function deliver(event, done) {
  let answer;
  try {
    answer = await fetch(EVENTS_PATH, {
      method: "POST",
      headers: { "content-type": "application/cloudevents+json" },
      body: JSON.stringify(event),
    });
  } catch {
    throw new NotDelivered("Signed, but the server could not be reached. " +
      "Press the button again to send it again.", event, done);
  }
  if (answer.ok) return done;
  let detail = "";
  try {
    const problem = await answer.json();
    detail = problem.detail ? `: ${problem.detail}` : "";
  } catch {
    // not a problem document: the status says enough
  }
  const refused = `Signed, but the broker refused the event (${answer.status})${detail}`;
  if (RETRYABLE.has(answer.status)) {
    throw new NotDelivered(`${refused}. Press the button again to send it again.`, event, done);
  }
  throw new Failure(refused);
}

async function signPledge(wallet, pledge) {
  const funder = await account(wallet);
  await ensureChain(wallet, pledge.chainId);
  const typed = signing.typedData(pledge);
  const signature = await ask(wallet, "eth_signTypedData_v4", [funder, JSON.stringify(typed)]);
  const event = signing.bountySigned(pledge, funder, typed, signature);
  return deliver(event, `Pledge signed by ${funder} and sent (event ${event.id}). ` +
    "The bounty comment on GitHub will say when it is funded.");
}

async function signLink(wallet, message) {
  const signer = await account(wallet);
  const meant = signing.siweAddress(message);
  if (meant !== null && meant.toLowerCase() !== signer.toLowerCase()) {
    throw new Failure(`This message is for ${meant}, but your wallet's account is ` +
      `${signer}. Choose that account in your wallet and sign again. Nothing was sent.`);
  }
  const signature = await ask(wallet, "personal_sign", [signing.hexOfText(message), signer]);
  const event = signing.identityLink(message, signer, signature);
  return deliver(event, `Message signed by ${signer} and sent (event ${event.id}). ` +
    "GitHub will say when your account is linked.");
}

function showPledge(pledge) {
  $("pledge-repository").textContent = pledge.repository;
  $("pledge-issue").textContent = `#${pledge.issueNumber}`;
  $("pledge-amount").textContent = `${pledge.amount} ${pledge.denomination}`;
  $("pledge-base-units").textContent = pledge.amountBaseUnits;
  $("pledge-chain").textContent = String(pledge.chainId);
  $("pledge-bounty").textContent = pledge.bountyId;
  $("pledge").hidden = false;
}

function showLink(message) {
  $("link-message").textContent = message;
  $("link").hidden = false;
}

function start() {
  let request;
  try {
    request = signing.readRequest(window.location.search);
  } catch (error) {
    if (!(error instanceof signing.LinkError)) throw error;
    $("error").textContent = `This link cannot be signed: ${error.message}.`;
    return;
  }
  const sign = {
    pledge: () => { showPledge(request.pledge); return (w) => signPledge(w, request.pledge); },
    link: () => { showLink(request.message); return (w) => signLink(w, request.message); },
    none: () => { $("nothing").hidden = false; return null; },
  }[request.kind]();
  if (sign === null) return;

  const button = $("sign");
  let undelivered = null; // a NotDelivered: its event is sent again, not signed again
  button.hidden = false;
  button.addEventListener("click", async () => {
    $("status").textContent = "";
    $("error").textContent = "";
    const wallet = window.ethereum;
    if (undelivered === null && (!wallet || typeof wallet.request !== "function")) {
      $("error").textContent = "No browser wallet found. Install or enable one and reload.";
      return;
    }
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    document.body.dataset.state = "busy";
    $("status").textContent = undelivered === null ? "Waiting for your wallet…" : "Sending…";
    try {
      $("status").textContent = undelivered === null
        ? await sign(wallet)
        : await deliver(undelivered.event, undelivered.done);
      undelivered = null;
      button.textContent = "Signed";
      document.body.dataset.state = "sent";
    } catch (error) {
      $("status").textContent = "";
      $("error").textContent = error instanceof Failure ? error.message : `Failed: ${error}`;
      if (error instanceof NotDelivered) {
        undelivered = error;
        button.textContent = "Send again";
      }
      button.disabled = false;
      document.body.dataset.state = "failed";
    } finally {
      button.removeAttribute("aria-busy");
    }
  });
  document.body.dataset.state = "ready";
}

start();
