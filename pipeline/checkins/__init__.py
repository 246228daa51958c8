"""Scheduled check-ins, progress and streaks in the user's own time zone (no Telegram here).

`core` is what the parts share; `prefs` (when and where), `answers` (the buttons under a check-in),
`progress` (/progress), `dispatch` (claiming, writing and recording sends) and `scheduler` (the timer and the
passes) each do one job.
"""
