// Nothing to do now: this action exists for its post step (post.js).
console.log(`cluster ${process.env.INPUT_CLUSTER_NAME} will be deleted when the job ends`);
