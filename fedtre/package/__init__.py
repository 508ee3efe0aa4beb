"""Release packages: a job's request, each node's signed release and checks, and the result, as a Five Safes RO-Crate in a BagIt bag."""
