#!/usr/bin/env bash
# Restore the Switchboard database from a backup made by scripts/backup.sh.
#
#   scripts/restore.sh -l              list the backups in $BACKUP_DIR, newest last
#   scripts/restore.sh -d DATE [-y]    restore the newest backup of DATE (YYYY-MM-DD,
#                                      or a longer prefix such as 2026-11-29T1400)
#
# Restores into $DATABASE_URL, replacing what is there (pg_restore --clean
# --if-exists, in one transaction: a restore that fails leaves the database as
# it was). Checks the .sha256 first. Asks for confirmation on a terminal
# unless -y. Stop the servers first (docs/OPERATIONS.md): a restore replaces
# tables under them. With $BACKUP_S3_URI set and no local copy for DATE, the
# dumps are fetched from the bucket first.
set -euo pipefail

log() { printf '[restore] %s\n' "$*" >&2; }
die() { printf '[restore] ERROR: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

BACKUP_DIR=${BACKUP_DIR:-./backups}
mode="" date="" yes=0
while getopts "ld:yh" opt; do
  case $opt in
    l) mode=list ;;
    d) mode=restore; date=$OPTARG ;;
    y) yes=1 ;;
    *) usage ;;
  esac
done
[ -n "$mode" ] || usage

list() { find "$BACKUP_DIR" -maxdepth 1 -name 'switchboard-*.dump' -printf '%f\n' 2>/dev/null | sort; }

if [ "$mode" = list ]; then
  list | while read -r f; do
    printf '%s  %s\n' "${f#switchboard-}" "$(du -h "$BACKUP_DIR/$f" | cut -f1)" | sed 's/\.dump / /'
  done
  exit 0
fi

[[ "$date" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}[0-9TZ]*$ ]] || die "DATE must look like 2026-11-29 or 2026-11-29T1400"
: "${DATABASE_URL:?DATABASE_URL is required}"

pick() { list | grep -F "switchboard-$date" | tail -n 1 || true; }
file=$(pick)
if [ -z "$file" ] && [ -n "${BACKUP_S3_URI:-}" ]; then
  command -v aws >/dev/null || die "BACKUP_S3_URI is set but the aws CLI is not installed"
  endpoint=()
  [ -n "${BACKUP_S3_ENDPOINT:-}" ] && endpoint=(--endpoint-url "$BACKUP_S3_ENDPOINT")
  mkdir -p "$BACKUP_DIR"
  aws "${endpoint[@]}" s3 cp --only-show-errors --recursive --exclude '*' \
    --include "switchboard-$date*" "${BACKUP_S3_URI%/}/" "$BACKUP_DIR/"
  file=$(pick)
fi
[ -n "$file" ] || die "no backup for $date in $BACKUP_DIR (see: $0 -l)"

if [ -f "$BACKUP_DIR/$file.sha256" ]; then
  (cd "$BACKUP_DIR" && sha256sum --quiet -c "$file.sha256") || die "$file does not match its checksum"
else
  log "warning: no checksum beside $file"
fi

if [ "$yes" -eq 0 ] && [ -t 0 ]; then
  read -r -p "Replace the database at ${DATABASE_URL##*@} with $file? [y/N] " answer
  [[ "$answer" =~ ^[yY]$ ]] || die "cancelled"
fi

log "restoring $file"
pg_restore --clean --if-exists --no-owner --no-privileges --single-transaction \
  --exit-on-error --dbname="$DATABASE_URL" "$BACKUP_DIR/$file"
log "restored $file"
