// Deletes the cluster when the job ends. Plain Node, no packages: nothing to install or build.
const { spawnSync } = require("child_process");
const name = process.env.INPUT_CLUSTER_NAME || "kcluster";
const result = spawnSync("kcluster", ["delete", "--name", name], { stdio: "inherit" });
if (result.error) {
  console.log(`::warning::could not delete cluster ${name}: ${result.error.message}`);
} else if (result.status !== 0) {
  console.log(`::warning::kcluster delete --name ${name} exited with ${result.status}`);
}
