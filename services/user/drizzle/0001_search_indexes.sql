-- Search (GET /users?q=): see src/modules/profiles/search.ts for the queries these serve.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
--> statement-breakpoint
-- Name order for every tier, exact and prefix ranges on the name, keyset pagination; email
-- included so the "not an email prefix" filter runs on the index alone.
CREATE INDEX "profiles_search_name_idx" ON "profiles" ("search_name", "id") INCLUDE ("email");
--> statement-breakpoint
-- Exact and prefix ranges on the email, index-only.
CREATE INDEX "profiles_email_idx" ON "profiles" ("email") INCLUDE ("search_name", "id");
--> statement-breakpoint
-- Substrings that do not start the name: trigrams of the name minus its first character.
CREATE INDEX "profiles_search_tail_trgm_idx" ON "profiles" USING gin ((substr("search_name", 2)) gin_trgm_ops);
