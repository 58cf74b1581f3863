//! The journal's schema, versioned with `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes a journal from version `i` to `i + 1`; a new
//! journal runs them all. The next change to the table is one more entry
//! here (an `ALTER TABLE ... ADD COLUMN`, say), never an edit of an old one,
//! so every journal ever written can be brought up to date in place.

use rusqlite::Connection;

pub const MIGRATIONS: &[&str] = &[
    // Version 1.
    "CREATE TABLE inspections (
        id              INTEGER PRIMARY KEY,   -- record id, increasing
        time_ms         INTEGER NOT NULL,      -- when the answer was final, UTC ms since 1970
        host            TEXT    NOT NULL,
        peer            TEXT    NOT NULL,      -- the client's address
        request         INTEGER NOT NULL,      -- request sequence number since the server started
        view            INTEGER NOT NULL,      -- the image's place in its request, from 0
        image_dir       TEXT    NOT NULL,
        file            TEXT    NOT NULL,      -- the name the client sent
        image_bytes     INTEGER,               -- size of the bytes judged (null: not read)
        image_sha256    TEXT,
        model           TEXT    NOT NULL,
        model_sha256    TEXT    NOT NULL,
        result          INTEGER,               -- the result the client got
        label           TEXT,
        confidence      REAL,
        bbox_x1 REAL, bbox_y1 REAL, bbox_x2 REAL, bbox_y2 REAL,
        detected        INTEGER NOT NULL,      -- 1 when a pear was found
        error_code      INTEGER NOT NULL,
        message         TEXT,
        missed_deadline INTEGER NOT NULL,
        fruit_id        TEXT,                  -- as JSON text: \"lot7\" or 42
        queue_wait_ms   REAL,
        inference_ms    REAL,
        answer_ms       REAL    NOT NULL       -- from the request's arrival to its answer
    );
    CREATE INDEX inspections_time ON inspections (time_ms);",
];

/// The version this build writes.
pub fn current() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the journal to the current version; refuses one written by a newer build.
pub fn migrate(db: &mut Connection) -> Result<(), String> {
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| e.to_string())?;
    if version > current() {
        return Err(format!("schema version {version} is newer than this build's {}", current()));
    }
    for (v, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = db.transaction().map_err(|e| e.to_string())?;
        tx.execute_batch(sql).map_err(|e| format!("migration to version {}: {e}", v + 1))?;
        tx.pragma_update(None, "user_version", v as i64 + 1).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
    }
    Ok(())
}
