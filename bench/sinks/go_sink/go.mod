module smtpdlite/bench/gosink

go 1.19
