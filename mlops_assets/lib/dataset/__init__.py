"""Data: batches read, typed and validated against the contract (`data`), the sealed split
(`split`), the one feature function (`features`), the rows training reads (`rows`), and a
contract drafted from a CSV (`contract_init`)."""
