// Runs docs/dashboard.md's block (written next to this file as readme.mjs by tests/test_webapp_key.py):
//   node run.mjs reveal|wait USER_ID   (DATABASE_URL, KEY_ENCRYPTION_KEY from the environment)
// Prints one JSON line: {"key": "sk-..." | null}.
import pg from "pg";
import { revealKey, waitForKey } from "./readme.mjs";

const [mode, userId] = process.argv.slice(2);
const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
await client.connect();
try {
  const fernetKey = process.env.KEY_ENCRYPTION_KEY;
  const key = mode === "wait"
    ? await waitForKey(client, userId, fernetKey, { timeoutMs: 60000, everyMs: 50 })
    : await revealKey(client, userId, fernetKey);
  console.log(JSON.stringify({ key }));
} finally {
  await client.end();
}
