-- Search no longer matches emails (an address, or its start, would reveal who owns it): the
-- email range index of 0001 serves nothing now. The INCLUDE (email) of profiles_search_name_idx
-- is unused as well, but rebuilding that index would block writes to profiles for the length
-- of the build; it is harmless as it is.
DROP INDEX IF EXISTS "profiles_email_idx";
