// Two people chat through the browser UI of a real standalone chat node,
// in headless Debian Chromium driven by playwright-core.
//
// CHAT_NODE_BIN: the chat-node binary (scripts/test sets it).
// TEST_OUTPUT_DIR: where screenshots go (default: ./test-output).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const nodeBin = process.env.CHAT_NODE_BIN;
const outputDir = join(process.env.TEST_OUTPUT_DIR || "test-output", "browser");

let server;
let baseUrl;
let browser;

function startNode() {
  return new Promise((resolve, reject) => {
    assert.ok(nodeBin, "CHAT_NODE_BIN must point at the chat-node binary (run through scripts/test)");
    const child = spawn(nodeBin, ["--listen", "127.0.0.1:0", "--node-id", "browser-test"], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, NO_COLOR: "1" },
    });
    const timer = setTimeout(() => reject(new Error("chat-node did not report its address")), 20000);
    child.on("exit", (code) => reject(new Error(`chat-node exited early with ${code}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const match = line.match(/listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve({ child, url: match[1] });
      }
    });
  });
}

before(async () => {
  mkdirSync(outputDir, { recursive: true });
  const started = await startNode();
  server = started.child;
  baseUrl = started.url;
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
  server?.removeAllListeners("exit");
  server?.kill("SIGTERM");
});

async function signIn(name) {
  // A context per person: separate localStorage, like two browsers.
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  page.on("pageerror", (err) => assert.fail(`${name}'s page threw: ${err.message}`));
  await page.goto(baseUrl);
  await page.getByTestId("name").fill(name);
  await page.getByTestId("connect").click();
  await page.getByTestId("status").filter({ hasText: "online" }).waitFor({ timeout: 10000 });
  await page.locator("#whoami").filter({ hasText: name }).waitFor();
  return page;
}

test("a message typed on one page appears on the other", async () => {
  const ada = await signIn("Ada");
  const grace = await signIn("Grace");

  // Both are in the default room, and each sees the other present.
  await ada.getByTestId("members").getByText("Grace").waitFor({ timeout: 10000 });
  await grace.getByTestId("members").getByText("Ada").waitFor();

  // Typing shows up on the other page.
  await ada.getByTestId("body").pressSequentially("Hello Gr");
  await grace.getByTestId("typing").filter({ hasText: "Ada is typing" }).waitFor({ timeout: 5000 });
  await ada.getByTestId("body").pressSequentially("ace, from the browser!");
  await ada.getByTestId("body").press("Enter");

  const received = grace.getByTestId("messages").locator("li", { hasText: "Hello Grace, from the browser!" });
  await received.waitFor({ timeout: 10000 });
  assert.equal(await received.locator(".user").textContent(), "Ada");
  assert.equal(await received.getAttribute("data-seq"), "1");

  // The sender's copy is confirmed by the ack (it gets a seq, no longer pending).
  const sent = ada.getByTestId("messages").locator("li[data-seq='1']");
  await sent.waitFor({ timeout: 10000 });
  assert.match(await sent.textContent(), /Hello Grace, from the browser!/);
  assert.equal(await ada.locator("#messages li.pending").count(), 0);

  // And back, in seq order on both pages.
  await grace.getByTestId("body").fill("Hi Ada!");
  await grace.getByTestId("send").click();
  await ada.getByTestId("messages").locator("li[data-seq='2']", { hasText: "Hi Ada!" }).waitFor({ timeout: 10000 });
  const seqs = await ada.locator("#messages li[data-seq]").evaluateAll((items) => items.map((li) => Number(li.dataset.seq)));
  assert.deepEqual(seqs, [1, 2]);

  await ada.screenshot({ path: join(outputDir, "ada.png") });
  await grace.screenshot({ path: join(outputDir, "grace.png") });
});

test("switching rooms keeps conversations apart", async () => {
  const ada = await signIn("Ada2");
  const bob = await signIn("Bob2");
  await ada.getByTestId("room-input").fill("side-room");
  await ada.getByTestId("join").click();
  await ada.locator("#room-title").filter({ hasText: "side-room" }).waitFor();
  await ada.getByTestId("body").fill("only for side-room");
  await ada.getByTestId("body").press("Enter");
  await ada.getByTestId("messages").locator("li[data-seq='1']", { hasText: "only for side-room" }).waitFor({ timeout: 10000 });

  // Bob, still in the lobby, does not see it.
  await bob.waitForTimeout(500);
  assert.equal(await bob.getByTestId("messages").getByText("only for side-room").count(), 0);

  // Once Bob joins side-room, the replay shows it.
  await bob.getByTestId("room-input").fill("side-room");
  await bob.getByTestId("join").click();
  await bob.getByTestId("messages").getByText("only for side-room").waitFor({ timeout: 10000 });
  await bob.screenshot({ path: join(outputDir, "rooms.png") });
});
