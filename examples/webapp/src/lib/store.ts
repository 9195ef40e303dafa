// Where the handlers keep their items: a key -> JSON value store over one table.
//
// STORAGE=file      one JSON file per item under STORAGE_DIR (default: <tmpdir>/stagehost-webapp),
//                   in a folder per TABLE_NAME. What the sandbox and local runs use: no AWS needed.
// otherwise         the DynamoDB table TABLE_NAME through the AWS SDK v3 that the Lambda nodejs20.x
//                   runtime provides (@aws-sdk/client-dynamodb); it is not a dependency of this
//                   package, so outside Lambda this mode fails with a message saying so.
import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";
import { link, mkdir, readFile, rename, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Store {
  /** The value under key, or undefined. */
  get<T>(key: string): Promise<T | undefined>;
  /** Writes value under key, replacing what was there. */
  put(key: string, value: unknown): Promise<void>;
  /** Writes value under key only if the key is free; false when it was taken. */
  create(key: string, value: unknown): Promise<boolean>;
}

type Env = Record<string, string | undefined>;

export class FileStore implements Store {
  constructor(readonly dir: string) {}

  private file(key: string): string {
    return join(this.dir, `${encodeURIComponent(key)}.json`);
  }

  // A whole file under a temporary name first: a reader never sees half an item.
  private async staged(value: unknown): Promise<string> {
    await mkdir(this.dir, { recursive: true });
    const tmp = join(this.dir, `.tmp-${randomBytes(8).toString("hex")}`);
    await writeFile(tmp, JSON.stringify(value));
    return tmp;
  }

  async get<T>(key: string): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(this.file(key), "utf8")) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  async put(key: string, value: unknown): Promise<void> {
    await rename(await this.staged(value), this.file(key));
  }

  async create(key: string, value: unknown): Promise<boolean> {
    const tmp = await this.staged(value);
    try {
      // link fails when the name exists, so two concurrent creates cannot both win
      await link(tmp, this.file(key));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw err;
    } finally {
      await unlink(tmp);
    }
  }
}

// The part of @aws-sdk/client-dynamodb this store uses.
interface AttributeValue {
  S?: string;
}
export interface DynamoSdk {
  DynamoDBClient: new (config: object) => { send(command: object): Promise<{ Item?: Record<string, AttributeValue> | undefined }> };
  GetItemCommand: new (input: Record<string, unknown>) => object;
  PutItemCommand: new (input: Record<string, unknown>) => object;
}

export class DynamoStore implements Store {
  private readonly client: InstanceType<DynamoSdk["DynamoDBClient"]>;

  constructor(
    private readonly sdk: DynamoSdk,
    private readonly table: string,
  ) {
    this.client = new sdk.DynamoDBClient({});
  }

  async get<T>(key: string): Promise<T | undefined> {
    const out = await this.client.send(
      new this.sdk.GetItemCommand({ TableName: this.table, Key: { pk: { S: key } }, ConsistentRead: true }),
    );
    const data = out.Item?.data?.S;
    return data === undefined ? undefined : (JSON.parse(data) as T);
  }

  async put(key: string, value: unknown): Promise<void> {
    await this.client.send(new this.sdk.PutItemCommand({ TableName: this.table, Item: this.item(key, value) }));
  }

  async create(key: string, value: unknown): Promise<boolean> {
    try {
      await this.client.send(
        new this.sdk.PutItemCommand({
          TableName: this.table,
          Item: this.item(key, value),
          ConditionExpression: "attribute_not_exists(pk)",
        }),
      );
      return true;
    } catch (err) {
      if ((err as Error).name === "ConditionalCheckFailedException") return false;
      throw err;
    }
  }

  private item(key: string, value: unknown): Record<string, AttributeValue> {
    return { pk: { S: key }, data: { S: JSON.stringify(value) } };
  }
}

/** Loads the runtime's SDK; a variable name keeps bundlers from trying to bundle it. */
export function loadRuntimeSdk(): DynamoSdk {
  const name = "@aws-sdk/client-dynamodb";
  try {
    return createRequire(join(process.cwd(), "index.js"))(name) as DynamoSdk;
  } catch {
    throw new Error(
      `${name} is not available: it is provided by the Lambda runtime only; set STORAGE=file (and STORAGE_DIR) to run elsewhere`,
    );
  }
}

/** The store the environment asks for (see the top of this file). */
export function storeFromEnv(env: Env = process.env, loadSdk: () => DynamoSdk = loadRuntimeSdk): Store {
  const table = env.TABLE_NAME ?? "";
  if (env.STORAGE === "file") {
    const root = env.STORAGE_DIR ?? join(tmpdir(), "stagehost-webapp");
    return new FileStore(join(root, table === "" ? "local" : table));
  }
  if (table === "") throw new Error("TABLE_NAME is not set (or set STORAGE=file to use local files)");
  return new DynamoStore(loadSdk(), table);
}

let cached: Store | undefined;

/** The process's store, made on first use (a Lambda instance keeps it between invocations). */
export function store(): Store {
  cached ??= storeFromEnv();
  return cached;
}

/** For tests: forget the process's store so the next call reads the environment again. */
export function resetStore(): void {
  cached = undefined;
}
