/* Numbered schema migrations of the object store's own database. Append
 * only: never edit a shipped step.
 *
 * Keys are BLOBs so that ORDER BY and comparisons are memcmp, which is
 * UTF-8 binary order, the order S3 lists in. Row ids are AUTOINCREMENT so
 * that they grow with time (a key's newest version has the largest id) and
 * a deleted bucket's id is never reused by a new bucket of the same name. */
#include <stddef.h>

#include "s3/engine_internal.h"

const char *const nb_s3_migrations[] = {
    /* 1: buckets, versions, multipart uploads and parts, usage counters */
    "CREATE TABLE buckets ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  name TEXT NOT NULL UNIQUE,"
    "  owner TEXT NOT NULL,"
    "  region TEXT NOT NULL,"
    "  public_read INTEGER NOT NULL DEFAULT 0,"
    "  versioning INTEGER NOT NULL DEFAULT 0 CHECK (versioning IN (0, 1, 2)),"
    "  created_ms INTEGER NOT NULL);"
    "CREATE INDEX buckets_owner ON buckets(owner, name);"
    "CREATE TABLE versions ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  bucket_id INTEGER NOT NULL REFERENCES buckets(id),"
    "  key BLOB NOT NULL,"
    "  version_id TEXT NOT NULL,"
    "  is_latest INTEGER NOT NULL,"
    "  delete_marker INTEGER NOT NULL,"
    "  data_id TEXT,"
    "  size INTEGER NOT NULL,"
    "  etag TEXT NOT NULL,"
    "  mtime_ms INTEGER NOT NULL,"
    "  owner TEXT NOT NULL,"
    "  content_type TEXT, content_encoding TEXT, content_disposition TEXT,"
    "  cache_control TEXT, content_language TEXT, expires TEXT,"
    "  user_meta TEXT NOT NULL DEFAULT '{}',"
    "  checksum_algo TEXT, checksum_value TEXT,"
    "  parts INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (bucket_id, key, version_id));"
    "CREATE INDEX versions_key ON versions(bucket_id, key, id);"
    "CREATE INDEX versions_current ON versions(bucket_id, key)"
    "  WHERE is_latest = 1 AND delete_marker = 0;"
    "CREATE INDEX versions_data ON versions(data_id) WHERE data_id IS NOT NULL;"
    "CREATE TABLE uploads ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  upload_id TEXT NOT NULL UNIQUE,"
    "  bucket_id INTEGER NOT NULL REFERENCES buckets(id),"
    "  key BLOB NOT NULL,"
    "  owner TEXT NOT NULL,"
    "  initiated_ms INTEGER NOT NULL,"
    "  content_type TEXT, content_encoding TEXT, content_disposition TEXT,"
    "  cache_control TEXT, content_language TEXT, expires TEXT,"
    "  user_meta TEXT NOT NULL DEFAULT '{}');"
    "CREATE INDEX uploads_key ON uploads(bucket_id, key, id);"
    "CREATE INDEX uploads_age ON uploads(initiated_ms);"
    "CREATE TABLE parts ("
    "  upload INTEGER NOT NULL REFERENCES uploads(id),"
    "  number INTEGER NOT NULL,"
    "  data_id TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  etag TEXT NOT NULL,"
    "  mtime_ms INTEGER NOT NULL,"
    "  checksum_algo TEXT, checksum_value TEXT,"
    "  PRIMARY KEY (upload, number));"
    "CREATE INDEX parts_data ON parts(data_id);"
    "CREATE TABLE usage ("
    "  owner TEXT PRIMARY KEY,"
    "  bytes INTEGER NOT NULL DEFAULT 0,"
    "  objects INTEGER NOT NULL DEFAULT 0);",
    /* 2: a key's latest row without visiting its older versions (head,
     * get, put, delete of a key with many versions); versions listed newest
     * first without a sort */
    "CREATE INDEX versions_latest ON versions(bucket_id, key) WHERE is_latest = 1;"
    "CREATE INDEX versions_key_desc ON versions(bucket_id, key, id DESC);"
    "DROP INDEX versions_key;",
    /* 3: small objects kept in their row (NB_S3_INLINE_MAX): body is the
     * data of a version whose data_id is NULL and that is no delete marker */
    "ALTER TABLE versions ADD COLUMN body BLOB;",
    NULL,
};
