#!/usr/bin/env bash
# Back up the Switchboard database (docs/OPERATIONS.md, "Backup and restore").
#
#   scripts/backup.sh
#
# Writes $BACKUP_DIR/switchboard-<UTC timestamp>.dump (pg_dump custom format,
# compressed, restorable table by table) and a .sha256 beside it, written to a
# temporary name first so a half-written dump never looks like a backup.
# Then deletes local dumps older than $BACKUP_RETENTION_DAYS days and, when
# $BACKUP_S3_URI is set, uploads the new dump with the aws CLI (any
# S3-compatible store: set $BACKUP_S3_ENDPOINT for MinIO, R2, B2 ...).
#
# Settings (environment):
#   DATABASE_URL            required: postgres://user[:pass]@host:port/db
#   BACKUP_DIR              default ./backups
#   BACKUP_RETENTION_DAYS   default 14 (0 keeps everything)
#   BACKUP_S3_URI           optional: s3://bucket/prefix
#   BACKUP_S3_ENDPOINT      optional: endpoint URL of an S3-compatible store
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION: read by the aws CLI
# Exit status is non-zero on any failure, so cron and systemd timers can alert.
set -euo pipefail

log() { printf '[backup] %s\n' "$*" >&2; }
die() { printf '[backup] ERROR: %s\n' "$*" >&2; exit 1; }

: "${DATABASE_URL:?DATABASE_URL is required}"
BACKUP_DIR=${BACKUP_DIR:-./backups}
RETENTION=${BACKUP_RETENTION_DAYS:-14}
[[ "$RETENTION" =~ ^[0-9]+$ ]] || die "BACKUP_RETENTION_DAYS must be a whole number of days"
command -v pg_dump >/dev/null || die "pg_dump not found (install postgresql-client)"

mkdir -p "$BACKUP_DIR"
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
name="switchboard-$stamp.dump"
tmp="$BACKUP_DIR/.$name.partial"
trap 'rm -f "$tmp"' EXIT

log "dumping to $BACKUP_DIR/$name"
pg_dump --format=custom --compress=6 --no-owner --no-privileges --file="$tmp" "$DATABASE_URL"
# A dump that pg_restore cannot read is not a backup.
pg_restore --list "$tmp" >/dev/null || die "the dump does not read back"
mv "$tmp" "$BACKUP_DIR/$name"
(cd "$BACKUP_DIR" && sha256sum "$name" > "$name.sha256")
log "wrote $name ($(du -h "$BACKUP_DIR/$name" | cut -f1))"

if [ "$RETENTION" -gt 0 ]; then
  find "$BACKUP_DIR" -maxdepth 1 -name 'switchboard-*.dump' -mtime +"$RETENTION" -print0 |
    while IFS= read -r -d '' old; do
      log "retention: deleting $(basename "$old")"
      rm -f "$old" "$old.sha256"
    done
fi

if [ -n "${BACKUP_S3_URI:-}" ]; then
  command -v aws >/dev/null || die "BACKUP_S3_URI is set but the aws CLI is not installed"
  endpoint=()
  [ -n "${BACKUP_S3_ENDPOINT:-}" ] && endpoint=(--endpoint-url "$BACKUP_S3_ENDPOINT")
  for f in "$name" "$name.sha256"; do
    aws "${endpoint[@]}" s3 cp --only-show-errors "$BACKUP_DIR/$f" "${BACKUP_S3_URI%/}/$f"
  done
  log "uploaded to ${BACKUP_S3_URI%/}/$name"
fi
echo "$BACKUP_DIR/$name"
