# The read scenarios of the standard benchmark, in one list for bench/run.sh and
# bench/postgres_reads.sh, which source this file. `run_read_scenarios` calls the sourcing script's
# own `read_scenario LABEL SCENARIO` for each, in table order; it needs $deep_offset.
run_read_scenarios() {
  read_scenario "GET /messages (first page)" messages
  read_scenario "GET /messages?order=desc (the newest page)" newest
  read_scenario "GET /messages?from= (a random seeded sender)" from
  read_scenario "GET /messages?since= (the newest 100 rows)" since
  read_scenario "GET /messages?q=zebra (0.5% of rows)" q
  read_scenario "GET /messages?offset=$deep_offset" offset
  read_scenario "GET /messages?cursor= (pages from offset $deep_offset on)" cursor
  read_scenario "GET /stats" stats
}
