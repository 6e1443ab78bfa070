import type { DatabaseSync, StatementSync } from 'node:sqlite'
import type { Item } from './api-types.ts'

/** Store keeps the items in SQLite, one prepared statement per operation. */
export interface Store {
  create(name: string, note: string | null): Item
  get(id: number): Item | undefined
  /** list returns up to limit items with an id above after, oldest first. */
  list(after: number, limit: number): Item[]
  /** delete reports whether an item had that id. */
  delete(id: number): boolean
  /** ping throws when the database cannot answer: the readiness check. */
  ping(): void
  close(): void
}

/**
 * openStore opens the SQLite database at path (':memory:' for one that lives and dies with the
 * process), creates its table if needed, and prepares its statements. It throws when the file
 * cannot be opened or created.
 */
export async function openStore(path: string): Promise<Store> {
  // Loaded here, not at the top: only a service that runs the example pays for it.
  const { DatabaseSync } = await import('node:sqlite')
  const db: DatabaseSync = new DatabaseSync(path)
  db.exec(`
    PRAGMA journal_mode = WAL;
    PRAGMA busy_timeout = 1000;
    CREATE TABLE IF NOT EXISTS items (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      name TEXT NOT NULL,
      note TEXT,
      created_at TEXT NOT NULL
    ) STRICT;
  `)
  const columns = 'id, name, note, created_at AS createdAt'
  const statements = {
    insert: db.prepare(`INSERT INTO items (name, note, created_at) VALUES (?, ?, ?) RETURNING ${columns}`),
    get: db.prepare(`SELECT ${columns} FROM items WHERE id = ?`),
    list: db.prepare(`SELECT ${columns} FROM items WHERE id > ? ORDER BY id LIMIT ?`),
    delete: db.prepare('DELETE FROM items WHERE id = ?'),
    ping: db.prepare('SELECT 1'),
  }
  return {
    create: (name, note) => row(statements.insert, name, note, new Date().toISOString()) as Item,
    get: (id) => row(statements.get, id),
    list: (after, limit) => statements.list.all(after, limit).map((r) => ({ ...r }) as Item),
    delete: (id) => Number(statements.delete.run(id).changes) > 0,
    ping: () => void statements.ping.get(),
    close: () => db.close(),
  }
}

/** row returns the statement's one row as a plain Item, or undefined. */
function row(statement: StatementSync, ...values: (string | number | null)[]): Item | undefined {
  const found = statement.get(...values)
  return found === undefined ? undefined : ({ ...found } as Item)
}
