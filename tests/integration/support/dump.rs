//! Every row of the database as text, to prove that a call changed nothing.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::db::TestDb;

/// Table name → its rows as JSON text, sorted.
pub type Dump = BTreeMap<String, Vec<String>>;

/// Every row of every table.
pub async fn dump_all(db: &TestDb) -> Dump {
    dump(&db.client().await, None).await
}

/// The rows of one organisation: the organisation itself and every row of a
/// table with an `organisation_id` column that belongs to it.
pub async fn dump_org(db: &TestDb, org: Uuid) -> Dump {
    dump(&db.client().await, Some(org)).await
}

/// Like [`dump_org`], through `client`: inside a transaction it is open in,
/// it shows the rows as that transaction sees them (its own changes too).
pub async fn dump_org_on(client: &tokio_postgres::Client, org: Uuid) -> Dump {
    dump(client, Some(org)).await
}

/// Every table but the cache's transient bookkeeping (leases and acks).
async fn dump(client: &tokio_postgres::Client, org: Option<Uuid>) -> Dump {
    let tables = client
        .query(
            "SELECT t.table_name::text, EXISTS (SELECT 1 FROM information_schema.columns c \
               WHERE c.table_schema = 'public' AND c.table_name = t.table_name \
               AND c.column_name = 'organisation_id') \
             FROM information_schema.tables t \
             WHERE t.table_schema = 'public' AND t.table_type = 'BASE TABLE' \
               AND t.table_name NOT IN ('cache_replicas', 'cache_acks') ORDER BY 1",
            &[],
        )
        .await
        .expect("list tables");
    let mut dump = Dump::new();
    for row in tables {
        let table: String = row.get(0);
        let has_org: bool = row.get(1);
        let select = format!("SELECT row_to_json(t)::text FROM \"{table}\" t");
        let rows = match org {
            None => client.query(&select, &[]).await,
            Some(org) if table == "organisations" => {
                client
                    .query(&format!("{select} WHERE id = $1"), &[&org])
                    .await
            }
            Some(org) if has_org => {
                client
                    .query(&format!("{select} WHERE organisation_id = $1"), &[&org])
                    .await
            }
            Some(_) => continue,
        }
        .unwrap_or_else(|e| panic!("dump {table}: {e}"));
        let mut rows: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        rows.sort();
        dump.insert(table, rows);
    }
    dump
}

/// Asserts two dumps are equal, naming the first table that differs.
#[track_caller]
pub fn assert_same(before: &Dump, after: &Dump, case: &str) {
    for (table, rows) in before {
        assert_eq!(
            Some(rows),
            after.get(table),
            "{case}: table {table} changed"
        );
    }
    assert_eq!(before.len(), after.len(), "{case}: tables differ");
}
