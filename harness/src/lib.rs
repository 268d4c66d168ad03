/*!
Targets, the replay engine, the structural diff, clusters and reports of `replay`. Nothing here
yet: the targets and the engine are the next issue.
*/
