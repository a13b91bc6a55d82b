// simple-whip-server's configuration for the WHIP push tests and
// scripts/bench-push: Janus's WebSockets API inside the same namespace.
module.exports = {
	janus: { address: 'ws://127.0.0.1:8188' },
	port: 7080,
	rest: '/whip',
	allowTrickle: true,
	strictETags: false,
	iceServers: []
};
