-- Generated from the roster by `bun scripts/roster.ts --write`.
-- Run once by the postgres image on an empty data directory (docker compose): one database
-- per PostgreSQL service. The chart's dev infra creates the same list (infra.postgresql.databases).
CREATE DATABASE parley_auth;
CREATE DATABASE parley_user;
CREATE DATABASE parley_notification;
