import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { DynamoStore, FileStore, storeFromEnv } from "../../src/lib/store";

describe("file store", () => {
  const dir = mkdtempSync(join(tmpdir(), "webapp-store-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("puts, gets and replaces items, and says undefined for a missing key", async () => {
    const db = new FileStore(join(dir, "t1"));
    assert.equal(await db.get("user#nobody"), undefined);
    await db.put("user#a", { n: 1 });
    await db.put("user#a", { n: 2 });
    assert.deepEqual(await db.get("user#a"), { n: 2 });
  });

  it("creates a key once, even when creates race, and leaves no temporary files", async () => {
    const db = new FileStore(join(dir, "t2"));
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => db.create("config#x", { i })));
    assert.equal(results.filter(Boolean).length, 1);
    assert.deepEqual(readdirSync(join(dir, "t2")), [`${encodeURIComponent("config#x")}.json`]);
  });

  it("is chosen by STORAGE=file, in a folder per table", () => {
    const db = storeFromEnv({ STORAGE: "file", STORAGE_DIR: dir, TABLE_NAME: "Items" });
    assert.ok(db instanceof FileStore);
    assert.equal(db.dir, join(dir, "Items"));
  });
});

describe("dynamodb store", () => {
  // a stand-in for @aws-sdk/client-dynamodb that records the commands and keeps items in a map
  function fakeSdk() {
    const items = new Map<string, Record<string, { S?: string }>>();
    const sent: { kind: string; input: Record<string, unknown> }[] = [];
    class Command {
      constructor(
        readonly kind: string,
        readonly input: Record<string, unknown>,
      ) {}
    }
    const sdk = {
      DynamoDBClient: class {
        async send(command: object) {
          const { kind, input } = command as Command;
          sent.push({ kind, input });
          const key = (input.Key ?? input.Item) as { pk: { S: string } };
          if (kind === "get") return { Item: items.get(key.pk.S) };
          if (input.ConditionExpression && items.has(key.pk.S)) {
            throw Object.assign(new Error("conditional"), { name: "ConditionalCheckFailedException" });
          }
          items.set(key.pk.S, input.Item as Record<string, { S?: string }>);
          return {};
        }
      },
      GetItemCommand: class extends Command {
        constructor(input: Record<string, unknown>) {
          super("get", input);
        }
      },
      PutItemCommand: class extends Command {
        constructor(input: Record<string, unknown>) {
          super("put", input);
        }
      },
    };
    return { sdk, sent };
  }

  it("stores items as {pk, data} in TABLE_NAME with a conditional create", async () => {
    const { sdk, sent } = fakeSdk();
    const db = storeFromEnv({ TABLE_NAME: "AppTable" }, () => sdk);
    assert.ok(db instanceof DynamoStore);
    assert.equal(await db.create("user#a", { n: 1 }), true);
    assert.equal(await db.create("user#a", { n: 2 }), false);
    assert.deepEqual(await db.get("user#a"), { n: 1 });
    assert.equal(await db.get("user#b"), undefined);
    assert.deepEqual(sent[0], {
      kind: "put",
      input: { TableName: "AppTable", Item: { pk: { S: "user#a" }, data: { S: '{"n":1}' } }, ConditionExpression: "attribute_not_exists(pk)" },
    });
  });

  it("needs TABLE_NAME, and says where the SDK comes from when it is missing", () => {
    assert.throws(() => storeFromEnv({}), /TABLE_NAME is not set/);
    assert.throws(() => storeFromEnv({ TABLE_NAME: "T" }), /provided by the Lambda runtime only; set STORAGE=file/);
  });
});
