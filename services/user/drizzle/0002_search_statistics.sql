-- Finer statistics for the substring tier: with the default sample the planner's estimate of
-- `substr(search_name, 2) like '%q%'` is often 10x off, and it walks the name index in order
-- for rare substrings (or fetches every row of common ones) instead of the cheaper plan.
-- Costs ~0.1 ms of planning per search that reaches that tier.
ALTER INDEX "profiles_search_tail_trgm_idx" ALTER COLUMN 1 SET STATISTICS 1000;
