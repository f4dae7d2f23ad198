"""High availability for the router (userlb.ha): heartbeats, VRRPv3, takeover."""
