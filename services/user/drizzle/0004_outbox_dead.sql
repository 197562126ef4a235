-- The outbox relay retries a row that failed at next_attempt_at and, after OUTBOX_MAX_ATTEMPTS
-- failures, moves it to outbox_dead with the reason, so it no longer holds up the others.
CREATE TABLE "outbox_dead" (
	"id" uuid PRIMARY KEY NOT NULL,
	"type" text NOT NULL,
	"event" jsonb NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"attempts" integer NOT NULL,
	"reason" text NOT NULL,
	"error" text NOT NULL,
	"dead_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "outbox" ADD COLUMN "next_attempt_at" timestamp with time zone;
