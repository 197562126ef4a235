ALTER TABLE "users" ADD COLUMN "verified_email" text;--> statement-breakpoint
-- Users projected before this column existed keep receiving mail: no event will ever tell this
-- service that they verified, and the per-recipient hourly cap now bounds what any address gets.
-- Users projected from here on are mailed (beyond their verification code) once verified.
UPDATE "users" SET "verified_email" = "email";
